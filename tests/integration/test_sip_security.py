"""Who the PBX lets in over SIP, seen from the network: real SIP requests on loopback."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pbx.security_events import SecurityEvents
from tests.dashboard_fixtures import open_store
from tests.integration.asterisk_helpers import (
    EventListener,
    Pair,
    ami_client,
    ari,
    of_type,
    sip_request,
)
from tests.sip_phone import SipError, SipMessage, SipPhone
from web.bench.rig import DESK_PHONE_PASSWORD, DESK_PHONE_SIP_USER
from web.sip_blocks import BlockPolicy, SipBlocker

pytestmark = pytest.mark.integration


async def test_the_pbxs_answers_name_no_software_and_tell_accounts_from_guesses_by_nothing(
    quiet_pair: Pair,
) -> None:
    # The realm was "asterisk" and every answer carried "Server: Switchboard": each 401
    # told a scanner what runs behind the port.
    pbx = ("127.0.0.1", quiet_pair.pbx.sip_port)
    answers: dict[str, set[str]] = {"REGISTER": set(), "INVITE": set()}
    for user in (DESK_PHONE_SIP_USER, "nobody-here"):  # a known account and a guess
        for method, seen in answers.items():
            reply = await sip_request(pbx, method, user, to="2000")
            assert reply.status == 401, reply.start
            challenges = reply.all("www-authenticate")
            assert challenges and all('realm="pbx"' in c for c in challenges), challenges
            assert not reply.all("server") and not reply.all("user-agent")
            seen.add(anonymous(reply, user))
    # Byte for byte the same answer for an account and a guess, once what differs per
    # request (tags, nonces, the sender's port, the name asked about) is set aside.
    assert all(len(seen) == 1 for seen in answers.values()), answers
    # With a password: a wrong one for a real account, any one for an account that does
    # not exist. The same answer again.
    refusals = []
    for user in (DESK_PHONE_SIP_USER, "nobody-here"):
        with pytest.raises(SipError) as refused:
            async with SipPhone(user, "not-the-password", pbx, host="127.0.0.3"):
                pass
        refusals.append(refused.value.status)
    assert refusals[0] == refusals[1] == 401


def anonymous(reply: SipMessage, user: str) -> str:
    """A SIP answer as text, without what changes from one request to the next."""
    text = "\r\n".join([reply.start, *(f"{name}: {value}" for name, values in
                                       reply.headers.items() for value in values)])
    text = text.replace(user, "USER")
    return re.sub(r'((?:tag|branch|rport|nonce|opaque|received)="?)[^";,>\s]+', r"\1X",
                  re.sub(r"(call-id: )\S+", r"\1X", re.sub(r":\d{4,5}\b", ":PORT", text)))


def refusals(registry: CollectorRegistry, event: str) -> float:
    return registry.get_sample_value("switchboard_pbx_security_refusals_total",
                                     {"event": event, "service": "PJSIP"}) or 0.0


async def test_a_trunks_name_in_from_lets_nobody_in_and_is_counted(quiet_pair: Pair) -> None:
    # `From: <sip:carrier@...>` from any address used to be taken for the trunk `carrier`
    # (the username identifier matched it; a trunk has no credentials to ask for): the
    # call was answered and the AI greeted it. A trunk is its address and port only.
    pbx = quiet_pair.pbx
    trunks = [trunk.name for trunk in pbx.spec.trunks]
    assert len(trunks) >= 2
    registry = CollectorRegistry()
    watch = SecurityEvents(registry)  # the product's security watch, fed by AMI
    async with ami_client(pbx) as ami:
        ami.on_security(watch.observe)
        await ami.wait_ready(10)
        spoofs = 0
        # From the trunk's own host on another port, and from another address.
        for source in ("127.0.0.1", "127.0.0.2"):
            for name in trunks:
                reply = await sip_request(("127.0.0.1", pbx.sip_port), "INVITE", name,
                                          to="2000", source=source)
                assert reply.status == 401, f"{name} from {source}: {reply.start}"
                spoofs += 1
        for _ in range(100):  # AMI's events trail the 401s a little: 10 s at most
            if refusals(registry, "InvalidAccountID") >= spoofs:
                break
            await asyncio.sleep(0.1)
        assert refusals(registry, "InvalidAccountID") == spoofs


async def test_the_real_trunk_and_an_authenticating_phone_still_get_in(quiet_pair: Pair) -> None:
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    # The carrier, from its own address and port: recognised as the trunk, no challenge.
    async with (
        EventListener(pbx, "switchboard") as pbx_events,
        EventListener(carrier, "carrier") as carrier_events,
    ):
        status, outbound = await ari(carrier, "POST", "/channels",
                                     endpoint="PJSIP/2000@switchboard", app="carrier")
        assert status == 200, outbound
        start = await pbx_events.wait_for(of_type("StasisStart"))
        assert start["channel"]["name"].startswith("PJSIP/carrier-")
        await ari(carrier, "DELETE", f"/channels/{outbound['id']}")
        await carrier_events.wait_for(of_type("ChannelDestroyed", channel__id=outbound["id"]))
    # An agent's desk phone: its name alone gets a challenge; with its password it
    # registers and places a call (the agents' echo test).
    sip = ("127.0.0.1", pbx.sip_port)
    assert (await sip_request(sip, "INVITE", DESK_PHONE_SIP_USER, to="*43")).status == 401
    async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, sip) as phone:
        call = await phone.call("*43")
        await phone.wait_hears(call, "agent")  # its own voice, echoed
        await phone.hang_up(call)


async def register_status(sip: tuple[str, int], password: str, host: str) -> int:
    """What the PBX answers a desk phone's REGISTER from ``host`` (200 if it got in)."""
    try:
        async with SipPhone(DESK_PHONE_SIP_USER, password, sip, host=host):
            return 200
    except SipError as refused:
        return refused.status


async def test_an_address_that_keeps_failing_is_blocked_until_an_admin_lifts_it(
    quiet_pair: Pair, tmp_path: Path,
) -> None:
    pbx, scanner = quiet_pair.pbx, "127.0.0.9"
    sip = ("127.0.0.1", pbx.sip_port)
    store = await open_store(tmp_path)
    registry = CollectorRegistry()
    blocker = SipBlocker(
        store, BlockPolicy(block_after=5, block_window_s=60, block_for_s=3600), registry,
        applied=lambda: pbx.spec.blocked, apply=pbx.apply_blocks,
        exempt=lambda: [trunk.host for trunk in pbx.spec.trunks])
    try:
        async with ami_client(pbx) as ami:
            ami.on_security(blocker.observe)
            await ami.wait_ready(10)
            # A scanner guesses passwords as fast as it is answered, until it is refused.
            answers: list[int] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(answers) < 2000:
                answers.append(await register_status(sip, f"guess-{len(answers)}", scanner))
                if answers[-1] == 403:
                    break
            assert answers[-1] == 403, answers[-5:]
            assert set(answers[:5]) == {401}  # the first five were heard out
            # Blocked before authentication: the right password from there is refused too,
            # while a phone elsewhere registers as before.
            assert await register_status(sip, DESK_PHONE_PASSWORD, scanner) == 403
            assert await register_status(sip, DESK_PHONE_PASSWORD, "127.0.0.4") == 200
        async with store.transaction() as tx:
            (block,) = await tx.blocks.active()
            (line,) = await tx.audit.recent()
        assert (block.address, block.failures) == (scanner, 5)
        assert (line.actor, line.action, line.subject) == ("sip-guard", "sip_address_blocked",
                                                           scanner)
        assert registry.get_sample_value("switchboard_pbx_blocked_addresses") == 1

        # The admin lifts it (the Admin page's POST does these two steps).
        async with store.transaction() as tx:
            assert await tx.blocks.lift(scanner, "ada") == 1
        assert await blocker.refresh()
        assert await register_status(sip, DESK_PHONE_PASSWORD, scanner) == 200
        assert registry.get_sample_value("switchboard_pbx_blocked_addresses") == 0
    finally:
        await pbx.apply_blocks(())  # the PBX is shared with the tests that follow
        await store.engine.dispose()
