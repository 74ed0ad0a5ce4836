"""Business hours on real Asterisk: a carrier's caller rings the sales number on a
holiday, and the controller puts them through to sales' fallback number at once, with
no card offered to the agent who is on duty; a card for a queue closed today does the
same."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.hours import Hours
from handoff.queues import Strategy
from tests.integration.asterisk_helpers import Pair
from tests.waiting import until
from web.bench.rig import Rig, rig
from web.bench.world import local_world

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def call_rig(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r,
    ):
        yield r


async def test_a_call_on_a_holiday_goes_straight_to_the_fallback_number(
    call_rig: Rig,
) -> None:
    r = call_rig
    # Today is a holiday wherever the site is: yesterday, today and tomorrow in UTC
    # cover every zone's today.
    today = datetime.now(UTC).date()
    holidays = [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]
    async with r.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
        assert sales is not None
        await tx.assistants.set_hours(sales.id, Hours.parse(["mon-sun 00:00-24:00"],
                                                            holidays))
    start = time.monotonic()
    placed = await r.place_call("2100")  # sales: its fallback is a number on the carrier

    async def forwarded() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(placed.call_id)).state is CallState.FORWARDED

    await until(forwarded)
    # The fallback line answers and speaks (the world plays the agent's tone on it).
    await r.wait_hears(placed, "agent", after=start, timeout=10)
    await r.hang_up_caller(placed)

    async def ended() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(placed.call_id)).outcome is not None

    await until(ended)
    async with r.store.transaction() as tx:
        call = await tx.calls.get(placed.call_id)
        handoffs = await tx.handoffs.for_call(placed.call_id)
    assert call.outcome is CallOutcome.FALLBACK_NUMBER
    assert handoffs == []  # nobody was offered a card: the office is closed


async def test_a_card_for_a_closed_queue_puts_the_caller_through_to_the_fallback_number(
    call_rig: Rig,
) -> None:
    r = call_rig
    today = datetime.now(UTC).date()
    async with r.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
        assert sales is not None
        desk = await tx.queues.create(
            name="sales-desk", strategy=Strategy.OFFER_ALL, ring_s=20, max_wait_s=60,
            service_level_s=20, no_answer_limit=3,
            holidays=[(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)])
        await tx.queues.set_members(desk.id, [(r.agent_id, 3)])
        await tx.queues.set_assistants(desk.id, [sales.id])
    placed = await r.place_call("2100")  # sales itself is open: the AI answers
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="x")

    async def forwarded() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(placed.call_id)).state is CallState.FORWARDED

    # Ada is at her desk, but her queue is closed today: no card, the outside line.
    await until(forwarded)
    async with r.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    assert (handoff.state, handoff.failure_reason) == (HandoffState.FAILED,
                                                       FailureReason.NO_AGENTS)
    await r.hang_up_caller(placed)

    async def ended() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(placed.call_id)).outcome is CallOutcome.FALLBACK_NUMBER

    await until(ended)
