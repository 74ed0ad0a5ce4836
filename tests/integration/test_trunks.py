"""Trunks to a carrier that requires registration and digest authentication.

The carrier here is a real Asterisk that knows the PBX only as an account: it
challenges every REGISTER and INVITE, and reaches the PBX only at the contact the PBX
registered (the ``line`` parameter in it is how the PBX tells the carrier's calls from
anyone else's). Nothing identifies either side by address.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.callback import Callbacks
from handoff.calls import CallState
from handoff.outbound import Outbound
from handoff.store import Store
from handoff.trunks import OutboundRefused
from pbx import runtime
from pbx.ari import AriClient
from pbx.asterisk_config import InboundRoute, SipAgent
from pbx.trunk_config import SipTrunk, TrunkAccount
from pbx.trunk_status import TrunkState, TrunkStatus, endpoint_states, read_statuses
from tests.integration.asterisk_helpers import ami_client, ari, assert_quiet
from tests.sip_phone import SipPhone
from tests.waiting import until
from web.bench.rig import (
    DESK_PHONE_PASSWORD,
    DESK_PHONE_SIP_USER,
    Pair,
    Rig,
    carrier_outbound,
    rig,
)
from web.bench.world import FALLBACK_NUMBER, local_world

pytestmark = pytest.mark.integration

ACCOUNT = "switchboard"  # the PBX's account at the carrier (the World dials it so)
CALLER_ID = "+15550100"  # what the carrier must see as the caller of our calls out


@pytest_asyncio.fixture(scope="module")
async def registering_pair(installation: runtime.Installation,
                           state_dir: Path) -> AsyncIterator[Pair]:
    """A PBX registering to a carrier that requires it (the password made here, once)."""
    password = secrets.token_urlsafe(16)
    pbx_ports = runtime.allocate_ports(runtime.PortRequest(), max_calls=10)
    taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
    carrier_ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken, max_calls=10)
    tag = f"reg{os.getpid()}"
    pbx = runtime.new_instance(
        installation, f"{tag}-pbx", state_dir, ports=pbx_ports, max_calls=10,
        trunks=(SipTrunk("carrier", "127.0.0.1", carrier_ports.sip, from_user=CALLER_ID,
                         auth="register", username=ACCOUNT, password=password,
                         qualify_s=2),),
        routes=(InboundRoute("2000", "receptionist"), InboundRoute("_21XX", "sales")),
        # Bea's desk phone (tests.sip_phone) registers here: the agent of the call-back.
        agents=(SipAgent(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, "deskphone", "Bea"),),
    )
    carrier = runtime.new_instance(
        installation, f"{tag}-carrier", state_dir, ports=carrier_ports, max_calls=10,
        app="carrier", trunk_accounts=(TrunkAccount(ACCOUNT, password),),
        routes=(InboundRoute("_5XXX", "fallback"), InboundRoute("_7XXX", "agentphone")),
    )
    await carrier.start()
    try:
        await pbx.start()
        try:
            # The carrier can call the PBX once it registered: it knows no other way.
            await until(lambda: registered_at(carrier), why="the PBX never registered")
            yield Pair(pbx=pbx, carrier=carrier)
        finally:
            await pbx.stop()
    finally:
        await carrier.stop()


async def registered_at(carrier: runtime.AsteriskInstance) -> bool:
    return ";line=" in await carrier.cli(f"pjsip show aor {ACCOUNT}")


async def statuses(pbx: runtime.AsteriskInstance) -> dict[str, TrunkStatus]:
    ari = AriClient(pbx.ari_url, *pbx.ari_auth, apps="trunk-status")
    ami = ami_client(pbx)
    await ami.start()
    try:
        await ami.wait_ready(10)
        return await read_statuses(pbx.spec.trunks, ami, endpoint_states(ari), pbx.log_file)
    finally:
        await ami.close()
        await ari.close()


async def becomes(pbx: runtime.AsteriskInstance, state: TrunkState) -> TrunkStatus:
    async def now() -> TrunkStatus | None:
        status = (await statuses(pbx))["carrier"]
        return status if status.state is state else None

    found: TrunkStatus = await until(now, 20, step=0.5, why=f"the trunk never {state}")
    return found


@pytest_asyncio.fixture
async def quiet_registering(registering_pair: Pair) -> AsyncIterator[Pair]:
    # A test that changed the trunk has the PBX register again: the carrier knows where
    # to call once that is through.
    await until(lambda: registered_at(registering_pair.carrier),
                why="the PBX never registered")
    yield registering_pair
    await assert_quiet(registering_pair.pbx)
    await assert_quiet(registering_pair.carrier)


def through_carrier(store: Store) -> Outbound:
    return carrier_outbound(store, caller_id=CALLER_ID)


@pytest_asyncio.fixture
async def reg_rig(quiet_registering: Pair, tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        local_world(quiet_registering.carrier) as world,
        rig(quiet_registering.pbx, world, tmp_path / "switchboard.db",
            outbound=through_carrier) as r,
    ):
        # Nobody takes cards: Ada's desk phone is not on this carrier.
        async with r.store.transaction() as tx:
            await tx.agents.set_duty(r.agent_id, False)
        yield r


async def test_the_pbx_registers_to_a_carrier_that_requires_it(
    registering_pair: Pair,
) -> None:
    status = await becomes(registering_pair.pbx, TrunkState.REGISTERED)
    assert status.last_error == ""
    assert await registered_at(registering_pair.carrier)  # it reaches us where we said


async def test_a_wrong_password_shows_the_carriers_refusal_until_it_is_put_right(
    registering_pair: Pair,
) -> None:
    pbx = registering_pair.pbx
    right = pbx.spec.trunks
    wrong = (dataclasses.replace(right[0], password="not-the-password"),)
    await pbx.apply_directory(pbx.spec.routes, pbx.spec.agents, wrong)
    try:
        status = await becomes(pbx, TrunkState.REJECTED)
        assert "SIP 401" in status.last_error and "password" in status.last_error
        assert "not-the-password" not in status.last_error
    finally:
        # Put right without a restart: the registration starts over and succeeds.
        await pbx.apply_directory(pbx.spec.routes, pbx.spec.agents, right)
    await becomes(pbx, TrunkState.REGISTERED)


async def test_a_call_from_the_registered_carrier_reaches_the_assistant(
    reg_rig: Rig,
) -> None:
    placed = await reg_rig.place_call("2000")
    live = reg_rig.control.calls[placed.call_id]
    assert live.assistant == "receptionist" and live.ai is not None
    await reg_rig.wait_hears(placed, "ai")  # media flows both ways through the trunk
    await reg_rig.hang_up_caller(placed)
    await until(lambda: placed.call_id not in reg_rig.control.calls)


async def test_a_trunk_changed_mid_call_keeps_the_call(reg_rig: Rig) -> None:
    pbx = reg_rig.pbx
    placed = await reg_rig.place_call("2000")
    await reg_rig.wait_hears(placed, "ai")
    before = pbx.spec.trunks
    changed = (dataclasses.replace(before[0], from_user="+15550199", codecs=("ulaw",)),)
    await pbx.apply_directory(pbx.spec.routes, pbx.spec.agents, changed)  # re-registers too
    try:
        # The caller goes on hearing the AI after the reload and the new registration.
        await becomes(pbx, TrunkState.REGISTERED)
        await reg_rig.wait_hears(placed, "ai", after=time.monotonic())
        assert placed.call_id in reg_rig.control.calls
    finally:
        await pbx.apply_directory(pbx.spec.routes, pbx.spec.agents, before)
    await reg_rig.hang_up_caller(placed)
    await until(lambda: placed.call_id not in reg_rig.control.calls)


async def callers_seen_by(carrier: runtime.AsteriskInstance, exten: str) -> list[str]:
    """The caller numbers of the carrier's calls to ``exten`` (as its SIP From said)."""
    _, channels = await ari(carrier, "GET", "/channels")
    return [c["caller"]["number"] for c in channels if c["dialplan"]["exten"] == exten]


async def test_the_fallback_number_goes_out_through_the_trunk_with_its_caller_id(
    reg_rig: Rig, quiet_registering: Pair,
) -> None:
    placed = await reg_rig.place_call("2100")  # sales: nobody on duty, so 5001
    await reg_rig.control.request_handoff(placed.call_id, reason="caller_asked", summary="x")

    async def forwarded() -> bool:
        async with reg_rig.store.transaction() as tx:
            return (await tx.calls.get(placed.call_id)).state is CallState.FORWARDED

    await until(forwarded)
    assert await callers_seen_by(quiet_registering.carrier, FALLBACK_NUMBER) == [CALLER_ID]
    await reg_rig.hang_up_caller(placed)
    await until(lambda: placed.call_id not in reg_rig.control.calls)


async def test_a_call_back_goes_out_through_the_trunk_with_its_caller_id(
    reg_rig: Rig, quiet_registering: Pair,
) -> None:
    callbacks: Callbacks = reg_rig.live.callbacks
    pbx_sip = ("127.0.0.1", quiet_registering.pbx.sip_port)
    async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, pbx_sip) as phone:
        cb = await callbacks.call_back(FALLBACK_NUMBER, agent_id=reg_rig.agent_id,
                                       endpoint=DESK_PHONE_SIP_USER, actor="ada")
        await phone.wait_call()
        await until(cb.connected.is_set)
        assert await callers_seen_by(quiet_registering.carrier, FALLBACK_NUMBER) == [CALLER_ID]
        await callbacks.end(cb.call_id)


@pytest.mark.parametrize("number, why", [
    ("+442071838750", "international"),
    ("0114420718387", "international"),
    ("+18765551234", "international"),  # Jamaica: +1, yet abroad
    ("19005551234", "premium-rate"),
    ("6001", "no allowed pattern"),
])
async def test_a_number_outside_the_trunks_rules_is_refused_with_a_reason_and_audited(
    reg_rig: Rig, quiet_registering: Pair, number: str, why: str,
) -> None:
    with pytest.raises(OutboundRefused, match=why):
        await reg_rig.live.callbacks.call_back(number, agent_id=reg_rig.agent_id,
                                               endpoint=DESK_PHONE_SIP_USER, actor="ada")
    # Nothing was dialled, not even the agent's phone, and no call was written.
    assert not reg_rig.live.callbacks.active
    for side in (quiet_registering.pbx, quiet_registering.carrier):
        assert (await ari(side, "GET", "/channels"))[1] == []
    async with reg_rig.store.transaction() as tx:
        [line] = await tx.audit.recent(1)
        assert await tx.calls.open_calls() == []
    assert (line.actor, line.action, line.subject) == ("ada", "outbound_refused",
                                                        f"number:{number}")
    assert why in line.detail["reason"] and line.detail["purpose"] == "call_back"
