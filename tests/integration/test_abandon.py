"""The caller hangs up at each step of a handoff (R7 of issue 16): offered, the agent's
phone ringing, answered but not yet in the caller's bridge, talking. The ledger's outcome,
the handoff's end and the agent's state after it are checked, and compared with
Asterisk's own account of the call: its AMI Hangup events (CDR and CEL stay off in the
product's configuration, so channel events are Asterisk's record here), which say who
hung up first and that every leg of the call ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.agents import AgentState, Presence, agent_state
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.live import Timing
from pbx.ami import AmiMessage
from tests.integration.asterisk_helpers import Pair, ami_client
from tests.waiting import until
from web.bench.rig import Rig, rig
from web.bench.world import AGENT_PHONE_NUMBER, World, local_world

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

STEPS = ["offered", "ringing", "answered", "talking"]
WRAP_UP_S = 60.0  # longer than the test: an agent in wrap-up stays there while we look


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


async def agent_phone_rings(r: Rig) -> bool:
    return any(c["dialplan"]["exten"] == AGENT_PHONE_NUMBER and c["state"] == "Ring"
               for c in await r.world.ari.channels.list())


@pytest.mark.parametrize("step", STEPS)
async def test_a_caller_who_hangs_up_at_each_step_is_recorded_as_asterisk_saw_it(
    quiet_pair: Pair, world: World, tmp_path: Path, step: str,
) -> None:
    hangups: list[AmiMessage] = []

    async def on_hangup(event: AmiMessage) -> None:
        hangups.append(event)

    # A wide overlap makes "answered, not yet in the bridge" a window, not a race.
    timing = Timing(ai_overlap_s=1.5, wrap_up_s=WRAP_UP_S)
    async with rig(quiet_pair.pbx, world, tmp_path / "db.sqlite", timing) as r, \
            ami_client(quiet_pair.pbx) as ami:
        ami.on("Hangup", on_hangup)
        await ami.wait_ready(10)
        if step == "ringing":
            await world.set_agent_phone("ring")
        placed = await r.place_call()
        handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                     summary="x")
        live = r.control.calls[placed.call_id]
        if step != "offered":
            await r.control.accept(handoff_id, r.agent_id)
        if step == "ringing":
            await until(lambda: agent_phone_rings(r))
        elif step == "answered":
            await asyncio.wait_for(live.answered.wait(), 5)
            assert not live.connected  # the AI still beside the caller: not moved yet
        elif step == "talking":
            await asyncio.wait_for(live.answered.wait(), 5)
            await r.control.settled(live)
        caller_leg, agent_leg = live.caller, live.agent
        await r.hang_up_caller(placed)

        async def ended() -> bool:
            async with r.store.transaction() as tx:
                return (await tx.calls.get(placed.call_id)).state is CallState.ENDED

        await until(ended)
        # The controller lets the call go once its end is handled, the agent's wrap-up
        # (if any) started by then (a task that moves her presence, then waits).
        await until(lambda: not r.control.calls)
        wrapping_up = any(t.get_name() == f"wrap-up agent={r.agent_id}"
                          for t in asyncio.all_tasks())

        async def presence() -> Presence:
            async with r.store.transaction() as tx:
                return (await tx.agents.get(r.agent_id)).presence

        if step == "talking":
            await until(lambda: _is(presence(), Presence.WRAP_UP))
        legs = {caller_leg} | ({agent_leg} if agent_leg else set())
        await until(lambda: legs <= {str(h["Uniqueid"]) for h in hangups},
                    why=lambda: f"Asterisk reported no end for {legs}")
        async with r.store.transaction() as tx:
            call = await tx.calls.get(placed.call_id)
            handoff = await tx.handoffs.get(handoff_id)
            ada = await tx.agents.get(r.agent_id)
            busy = r.agent_id in await tx.agents.busy_agent_ids()

    # Asterisk's account: the caller's leg ended first (the caller hung up, normally),
    # then every other leg of the call; none was left.
    ours = [h for h in hangups if str(h["Uniqueid"]) in legs]
    assert str(ours[0]["Uniqueid"]) == caller_leg
    assert ours[0]["Cause"] == "16", ours[0]  # normal clearing, from the caller's side
    assert len(ours) == len(legs)
    # ...and the ledger's.
    if step == "talking":
        assert call.outcome is CallOutcome.COMPLETED_BY_AGENT
        assert handoff.state is HandoffState.COMPLETED
    else:
        assert call.outcome is CallOutcome.ABANDONED
        assert handoff.state is HandoffState.ABANDONED
    assert handoff.ended_at is not None and call.ended_at is not None
    # The agent: free for the next caller at once when she never had this one; in
    # wrap-up (notes, a disposition) once she has talked to them.
    assert not busy
    assert wrapping_up is (step == "talking")
    expected = Presence.WRAP_UP if step == "talking" else Presence.AVAILABLE
    assert ada.presence is expected, (step, ada.presence)
    assert agent_state(ada.presence, busy) is (
        AgentState.WRAP_UP if step == "talking" else AgentState.AVAILABLE)


async def _is(value: Awaitable[Presence], expected: Presence) -> bool:
    return await value is expected
