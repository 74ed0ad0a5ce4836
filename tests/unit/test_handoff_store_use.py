"""What one handoff asks of the store, on the fake ARI: an open line's card taken and
handed back to the AI reads each thing once and writes each step once; the card's
offer timeout ends with the card."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import event as sql_event

from handoff.handoffs import HandoffState
from handoff.live import Party
from tests.unit.test_live_calls import Floor, floor  # noqa: F401 (the fixture below uses it)
from tests.unit.test_open_line import desks, open_line  # noqa: F401
from tests.waiting import until


def _pending(prefix: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


async def test_an_open_lines_handoff_reads_each_row_once_and_writes_each_step_once(
    desks: Floor,  # noqa: F811 (the imported fixture)
) -> None:
    # Every handoff asks these of the store, some while the caller waits: the
    # assistant is read for the card (its hours, timeout and handover words) and for
    # the AI's return (its engine now), never for the announcement; no step reads its
    # row before its UPDATE; the wrap-up knows the handoff it follows.
    await open_line(desks)
    caller, live = await desks.call()
    await desks.ari.idle()
    sent: list[str] = []

    def count(*args: object) -> None:
        sent.append(" ".join(str(args[2]).split()))

    engine = desks.store.engine.sync_engine
    sql_event.listen(engine, "before_cursor_execute", count)
    try:
        handoff_id = await desks.live.control.request_handoff(
            live.call_id, reason="caller_asked", summary="wants a person")
        await desks.live.control.accept(handoff_id, desks.ada)
        await until(lambda: live.move_settled.is_set() and live.party is Party.AGENT)
        await desks.live.control.return_to_ai(live.call_id)
        await until(lambda: not _pending("announce") and not _pending("wrap-up"))
    finally:
        sql_event.remove(engine, "before_cursor_execute", count)
    reads = [m[1] for s in sent if (m := re.match(r"SELECT .*? FROM (\w+)", s))]
    assert reads.count("assistants") == 2, sent
    # The card's own check (one card per caller) alone reads handoffs.
    assert reads.count("handoffs") == 1, sent
    assert reads.count("calls") == 1, sent  # the card's check of where the call stands
    assert await desks.handoff_state(handoff_id) is HandoffState.RETURNED_TO_AI
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")


async def test_a_taken_cards_offer_timeout_ends_with_it(
    desks: Floor,  # noqa: F811
) -> None:
    # The card waits up to the assistant's accept timeout (30 s); taken at once, its
    # timeout has nothing left to do and must not hold the call until then.
    await open_line(desks)
    caller, live, handoff_id = await desks.handed_to_ada()
    await until(lambda: not _pending(f"offer timeout {handoff_id}"), within=5,
                why="the offer's timeout still waits after the card was taken")
    assert live.offer_timeout is None
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")


async def test_a_caller_who_leaves_while_the_card_waits_takes_its_timeout_along(
    desks: Floor,  # noqa: F811
) -> None:
    caller, live = await desks.call()
    handoff_id = await desks.live.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")
    assert _pending(f"offer timeout {handoff_id}")
    await desks.ari.hang_up_phone(caller)
    # The hang-up's handler stops the timeout first, then writes the outcome.
    await until(lambda: _is_abandoned(desks, handoff_id))
    assert not _pending(f"offer timeout {handoff_id}")


async def _is_abandoned(site: Floor, handoff_id: int) -> bool:
    return await site.handoff_state(handoff_id) is HandoffState.ABANDONED
