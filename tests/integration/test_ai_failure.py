"""An AI engine that fails a caller, on real Asterisk instances: the caller is never left
in silence. A failed AI leg is replaced once; a second failure puts the caller on hold
for a person (a handoff of reason ai_failed), and with nobody to take them the caller
hears an apology and the call ends as failed, with a callback request on record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.live import AI_FAILED_REASON, CALLBACK_NOTE
from tests.integration.asterisk_helpers import Pair
from tests.waiting import until
from web.bench.rig import PlacedCall, Rig, rig
from web.bench.world import World, local_world

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as started:
        yield started


@pytest_asyncio.fixture
async def call_rig(quiet_pair: Pair, world: World, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r:
        yield r


async def call_state(r: Rig, call_id: str) -> CallState:
    async with r.store.transaction() as tx:
        return (await tx.calls.get(call_id)).state


async def call_of(r: Rig, placed: PlacedCall) -> str:
    """The call id of a call that may never reach the AI."""
    async def seen() -> bool:
        return any(c.caller_number == placed.caller for c in r.control.calls.values())

    await until(seen)
    return next(c.call_id for c in r.control.calls.values() if c.caller_number == placed.caller)


async def heard_besides_silence(r: Rig, placed: PlacedCall, start: float, end: float,
                                who: set[str]) -> bool:
    """Whether the caller heard audio between two instants that is none of `who`."""
    return any(heard not in {"-", *who} for _, heard in
               await r.world.frames(placed.caller, start, end))


async def test_an_ai_leg_dropped_mid_call_is_replaced_and_the_caller_hears_the_ai_again(
    call_rig: Rig, world: World,
) -> None:
    r = call_rig
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    first_leg = r.control.calls[placed.call_id].ai

    await world.engine.drop_calls()
    dropped_at = time.monotonic()
    await r.wait_hears(placed, "ai", after=dropped_at + 0.2)
    live = r.control.calls[placed.call_id]
    assert live.ai is not None and live.ai != first_leg
    assert world.engine.connections == 2
    assert await call_state(r, placed.call_id) is CallState.WITH_AI

    await r.hang_up_caller(placed)
    await until(lambda: _ended_as(r, placed.call_id, CallOutcome.COMPLETED_BY_AI))


async def test_an_ai_refused_once_at_the_start_is_retried_and_greets_the_caller(
    call_rig: Rig, world: World,
) -> None:
    r = call_rig
    world.engine.refusing = 1
    placed = await r.place_call()  # waits for a caller with an AI leg
    await r.wait_hears(placed, "ai")
    assert world.engine.connections == 2
    await r.hang_up_caller(placed)
    await until(lambda: _ended_as(r, placed.call_id, CallOutcome.COMPLETED_BY_AI))


async def test_an_ai_failing_twice_puts_the_caller_on_hold_and_a_person_takes_over(
    call_rig: Rig, world: World,
) -> None:
    r = call_rig
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    world.engine.refusing = -1  # the engine is down: the replacement leg fails too
    await world.engine.drop_calls()
    failed_at = time.monotonic()

    async def offered() -> bool:
        async with r.store.transaction() as tx:
            return any(h.reason == AI_FAILED_REASON and h.state is HandoffState.OFFERED
                       for h in await tx.handoffs.open_for_call(placed.call_id))

    await until(offered)
    assert await call_state(r, placed.call_id) is CallState.HANDOFF_PENDING
    await asyncio.sleep(1.0)  # what the caller hears while the card is on offer
    # Hold music, not silence and not the AI.
    assert await heard_besides_silence(r, placed, failed_at + 0.3, time.monotonic(),
                                       who={"ai", "caller"})

    async with r.store.transaction() as tx:
        [handoff] = await tx.handoffs.open_for_call(placed.call_id)
    accepted_at = time.monotonic()
    await r.control.accept(handoff.id, r.agent_id)
    await r.wait_hears(placed, "agent", after=accepted_at)
    # The move that settled stopped the music for the agent (and nothing puts a caller
    # with an agent back on hold).
    await r.control.settled(r.control.calls[placed.call_id])
    assert not r.control.calls[placed.call_id].on_hold

    await r.hang_up_caller(placed)
    await until(lambda: _ended_as(r, placed.call_id, CallOutcome.COMPLETED_BY_AGENT))


async def test_an_ai_down_from_the_start_with_nobody_on_duty_apologises_and_ends_as_failed(
    call_rig: Rig, world: World,
) -> None:
    r = call_rig
    async with r.store.transaction() as tx:
        await tx.agents.set_duty(r.agent_id, False)
    world.engine.refusing = -1
    placed = await r.place_call(wait_ai=False)
    placed.call_id = await call_of(r, placed)
    started = time.monotonic()

    await until(lambda: _ended_as(r, placed.call_id, CallOutcome.FAILED), within=20)
    # The caller heard the apology before the line went down, never the AI.
    assert await heard_besides_silence(r, placed, started, time.monotonic(), who={"caller"})
    assert await r.world.first_heard(placed.caller, "ai", 0.0) is None
    async with r.store.transaction() as tx:
        notes = await tx.notes.for_call(placed.call_id)
        handoffs = await tx.handoffs.for_call(placed.call_id)
    assert any(note.text.startswith(CALLBACK_NOTE) for note in notes)
    assert [(h.reason, h.state) for h in handoffs] == [(AI_FAILED_REASON, HandoffState.FAILED)]


async def _ended_as(r: Rig, call_id: str, outcome: CallOutcome) -> bool:
    async with r.store.transaction() as tx:
        call = await tx.calls.get(call_id)
    if call.state is CallState.ENDED:
        assert call.outcome is outcome, call.outcome
        return True
    return False
