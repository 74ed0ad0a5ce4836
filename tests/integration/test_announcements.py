"""What the caller is told when a person joins, on real Asterisk: an assistant with words
for the handover has them spoken to the caller once Ada's desk phone has the call; one
without says nothing, and the caller hears Ada straight away; a supervisor taking the
call over from the AI is announced too."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.live import LiveCall
from handoff.supervision import Mode
from tests.integration.asterisk_helpers import Pair
from tests.integration.test_supervision import end, sam
from tests.waiting import until
from web.bench.rig import PlacedCall, Rig, rig
from web.bench.world import local_world

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def call_rig(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r,
    ):
        yield r


async def _voice_heard(r: Rig, placed: PlacedCall, start: float, end: float) -> bool:
    """Speech (not one of the rig's tones) reached the caller between the two instants."""
    return any(who == "~" for _, who in await r.world.frames(placed.caller, start, end))


async def _handed_over(r: Rig) -> tuple[PlacedCall, LiveCall, float]:
    placed = await r.place_call()
    _, live = await r.hand_to_agent(placed, settled=True)
    return placed, live, time.monotonic()


async def _ended(r: Rig, call_id: str) -> bool:
    async with r.store.transaction() as tx:
        return (await tx.calls.get(call_id)).outcome is not None


async def test_the_caller_is_told_when_a_person_takes_the_call(call_rig: Rig) -> None:
    r = call_rig
    async with r.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_announcements(
            receptionist.id, {"handover": "You are now speaking with a person."})
    placed, live, connected = await _handed_over(r)

    async def told() -> bool:
        return await _voice_heard(r, placed, connected, time.monotonic())

    await until(told)
    # Then Ada, once the announcement is over.
    await r.wait_hears(placed, "agent", after=time.monotonic(), timeout=10)
    await r.hang_up_caller(placed)
    await until(lambda: _ended(r, live.call_id))


async def test_without_words_the_caller_hears_the_person_at_once(call_rig: Rig) -> None:
    r = call_rig
    placed, live, connected = await _handed_over(r)
    # A second of the call with Ada: her voice, and no announcement in it.
    await r.wait_hears(placed, "agent", after=connected + 1.0, timeout=10)
    assert not await _voice_heard(r, placed, connected, connected + 1.0)
    await r.hang_up_caller(placed)
    await until(lambda: _ended(r, live.call_id))


async def test_the_caller_is_told_when_a_supervisor_takes_the_call_over(call_rig: Rig) -> None:
    r = call_rig
    async with r.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_announcements(
            receptionist.id, {"takeover": "A supervisor is joining to help you."})
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    await r.live.supervision.supervise(placed.call_id, await sam(r), Mode.TAKE_OVER)
    taken = time.monotonic()

    async def told() -> bool:
        return await _voice_heard(r, placed, taken, time.monotonic())

    await until(told)
    await r.wait_hears(placed, "supervisor", after=time.monotonic(), timeout=10)
    await end(r, placed)
