"""Bea, an agent on a real SIP desk phone, seated at a rig's PBX (web.bench.rig, where the
fault soak seats her too): the shared steps of the desk-phone tests and of the
media-loss cases (R10 of issue 16)."""

from __future__ import annotations

import time

from handoff.handoffs import HandoffState
from tests.sip_phone import Dialog
from tests.waiting import until
from web.bench.rig import Bea, PlacedCall, Rig, bea_at_her_desk

__all__ = ["Bea", "bea_at_her_desk", "bea_takes_a_call", "handoff_is"]


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
