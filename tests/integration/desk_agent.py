"""Bea, an agent on a real SIP desk phone (tests.sip_phone), seated at a rig's PBX: the
shared set-up of the desk-phone tests and of the media-loss cases (R10 of issue 16)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from handoff.agents import EndpointKind, Presence
from handoff.handoffs import HandoffState
from tests.sip_phone import Dialog, SipPhone
from tests.waiting import until
from web.bench.rig import DESK_PHONE_PASSWORD, DESK_PHONE_SIP_USER, PlacedCall, Rig


@dataclass
class Bea:
    """Bea at her desk: on duty, her desk phone registered; Ada is off duty."""

    r: Rig
    phone: SipPhone
    agent_id: int


@contextlib.asynccontextmanager
async def bea_at_her_desk(r: Rig) -> AsyncIterator[Bea]:
    async with r.store.transaction() as tx:
        await tx.agents.set_duty(r.agent_id, False)
        agent = await tx.agents.create(
            login="bea", display_name="Bea", sip_user=DESK_PHONE_SIP_USER,
            sip_password=DESK_PHONE_PASSWORD, endpoint_kind=EndpointKind.DESKPHONE)
        await tx.agents.set_duty(agent.id, True)
        await tx.agents.set_presence(agent.id, Presence.AVAILABLE)
    pbx_sip = ("127.0.0.1", r.pbx.spec.ports.sip)
    async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, pbx_sip) as phone:
        await until(lambda: r.control.phone_registered(DESK_PHONE_SIP_USER))
        yield Bea(r, phone, agent.id)


async def bea_takes_a_call(bea: Bea) -> tuple[PlacedCall, int, Dialog]:
    """A caller asks the AI for a person; Bea accepts, her phone answers, the AI leaves."""
    r = bea.r
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="wants a person")
    await r.control.accept(handoff_id, bea.agent_id)
    call = await bea.phone.wait_call()
    await bea.phone.wait_hears(call, "caller")
    await r.wait_hears(placed, "agent", after=time.monotonic())
    await until(lambda: handoff_is(r, handoff_id, HandoffState.CONNECTED))
    return placed, handoff_id, call


async def handoff_is(r: Rig, handoff_id: int, state: HandoffState) -> bool:
    async with r.store.transaction() as tx:
        return (await tx.handoffs.get(handoff_id)).state is state
