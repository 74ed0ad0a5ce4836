"""A number's DTMF menu on real Asterisk: the carrier's caller hears the spoken prompt,
presses a key on their keypad (RFC 4733 over the trunk), and the assistant or queue the
key leads to takes the call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.calls import CallOutcome
from handoff.handoffs import HandoffState
from handoff.live import LiveCall
from handoff.menus import Menu
from handoff.queues import Strategy
from tests.integration.asterisk_helpers import Pair
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


async def _menu_on_the_receptionist(r: Rig, *lines: str) -> None:
    async with r.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_menu(receptionist.id, Menu.parse(
            "Press one for sales, two for billing.", lines))


async def _in_menu(r: Rig, placed: PlacedCall) -> LiveCall:
    async def waiting() -> bool:
        return any(r.control.menus.in_menu(c.caller) for c in r.control.calls.values()
                   if c.caller_number == placed.caller)

    await until(waiting)
    return next(c for c in r.control.calls.values() if c.caller_number == placed.caller)


async def _ended(r: Rig, call_id: str) -> bool:
    async with r.store.transaction() as tx:
        return (await tx.calls.get(call_id)).outcome is not None


async def test_a_key_pressed_in_the_menu_brings_the_assistant_it_leads_to(
    call_rig: Rig,
) -> None:
    r = call_rig
    await _menu_on_the_receptionist(r, "1=assistant:sales", "2=queue:billing")
    start = time.monotonic()
    placed = await r.place_call("2000", wait_ai=False)
    live = await _in_menu(r, placed)
    # The spoken prompt reaches the caller (voice, not one of the rig's tones).

    async def prompt_heard() -> bool:
        return any(who == "~" for _, who in await r.world.frames(placed.caller, start,
                                                                 time.monotonic()))

    await until(prompt_heard)
    await r.world.press(placed.caller, "1")

    async def with_sales_ai() -> bool:
        return live.ai is not None and live.assistant == "sales"

    await until(with_sales_ai)
    await r.wait_hears(placed, "ai", after=time.monotonic(), timeout=10)
    async with r.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
        call = await tx.calls.get(live.call_id)
    assert sales is not None and call.assistant_id == sales.id
    await r.hang_up_caller(placed)
    await until(lambda: _ended(r, live.call_id))
    async with r.store.transaction() as tx:
        assert (await tx.calls.get(live.call_id)).outcome is CallOutcome.COMPLETED_BY_AI


async def test_a_key_that_leads_to_a_queue_offers_the_card_to_its_members(
    call_rig: Rig,
) -> None:
    r = call_rig
    async with r.store.transaction() as tx:
        billing = await tx.queues.create(name="billing", strategy=Strategy.OFFER_ALL,
                                         ring_s=20, max_wait_s=60, service_level_s=20,
                                         no_answer_limit=3)
        await tx.queues.set_members(billing.id, [(r.agent_id, 3)])
    await _menu_on_the_receptionist(r, "1=assistant:sales", "2=queue:billing")
    placed = await r.place_call("2000", wait_ai=False)
    live = await _in_menu(r, placed)
    await r.world.press(placed.caller, "2")

    async def offered() -> bool:
        async with r.store.transaction() as tx:
            return [(h.state, h.reason, h.queue_id) for h in
                    await tx.handoffs.for_call(live.call_id)] == [
                (HandoffState.OFFERED, "menu", billing.id)]

    await until(offered)
    assert live.assistant == "receptionist" and live.ai is not None  # its AI keeps them
    await r.hang_up_caller(placed)
    await until(lambda: _ended(r, live.call_id))
