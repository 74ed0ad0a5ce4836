"""A lifecycle step of a call or a handoff as the store writes it: one conditional UPDATE
(guarded by the state it leaves) with no read first, its ledger line written with the
transaction's others; a step that loses a race is refused as a read-first step was, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event as sql_event
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.calls import CallEvent, CallState
from handoff.handoffs import HandoffEvent, HandoffState
from handoff.states import InvalidTransition
from handoff.store import Store, create_store_engine
from handoff.store.models import Handoff
from tests.store_fixtures import FakeClock
from tests.unit.test_store import accept, new_agents, new_call, offered_handoff


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements sent through `engine` meanwhile, by their first word."""
    sent: list[str] = []

    def count(*args: object) -> None:
        sent.append(str(args[2]).split()[0])

    sql_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        sql_event.remove(engine.sync_engine, "before_cursor_execute", count)


async def connected_handoff(store: Store) -> Handoff:
    """A caller's card, taken by an agent whose leg answered: the call is with them."""
    call = await new_call(store)
    [agent] = await new_agents(store, 1)
    card = await offered_handoff(store, call)
    await accept(store, card.id, agent.id)
    async with store.transaction() as tx:
        await tx.handoffs.apply(card.id, HandoffEvent.DIAL_AGENT)
        await tx.calls.apply(call.id, CallEvent.AGENT_CONNECTED)
        return await tx.handoffs.apply(card.id, HandoffEvent.AGENT_ANSWERED)


async def test_a_step_writes_its_row_with_one_conditional_update_and_reads_nothing(
    store: Store, engine: AsyncEngine,
) -> None:
    # Every step of every handoff (about seven each) read the row before writing it:
    # the UPDATE's own guard on the state it leaves does the same job.
    handoff = await connected_handoff(store)
    with statements(engine) as sent:
        async with store.transaction() as tx:
            returned = await tx.handoffs.apply(handoff.id, HandoffEvent.RETURN_TO_AI)
            call = await tx.calls.apply(handoff.call_id, CallEvent.RETURN_TO_AI)
    assert (returned.state, call.state) == (HandoffState.RETURNED_TO_AI, CallState.WITH_AI)
    assert "SELECT" not in sent, sent
    assert sent.count("UPDATE") == 2, sent
    # The two steps' ledger lines go in together, as the transaction ends.
    assert sent.count("INSERT") == 1, sent
    async with store.transaction() as tx:
        steps = [(t.from_state, t.event, t.to_state)
                 for t in await tx.calls.history(handoff.call_id)][-2:]
    assert steps == [("connected", "return_to_ai", "returned_to_ai"),
                     ("with_agent", "return_to_ai", "with_ai")]


async def test_a_step_allowed_from_several_states_reads_nothing_when_told_the_state(
    store: Store, engine: AsyncEngine,
) -> None:
    # The caller hangs up: the hang-up handler has just read the call and its cards.
    handoff = await connected_handoff(store)
    with statements(engine) as sent:
        async with store.transaction() as tx:
            await tx.handoffs.apply(handoff.id, HandoffEvent.CALLER_HUNG_UP,
                                    seen=HandoffState.CONNECTED)
    assert "SELECT" not in sent, sent
    async with store.transaction() as tx:
        assert (await tx.handoffs.get(handoff.id)).state is HandoffState.COMPLETED


async def test_a_step_from_a_state_seen_before_it_changed_is_judged_on_what_it_is_now(
    store: Store,
) -> None:
    # What the caller saw is only a guess: the UPDATE's guard checks it, and a row that
    # moved on is read and the event judged against its state, as a read-first step
    # would. A transfer's call is with the first agent, not waiting for one.
    handoff = await connected_handoff(store)
    async with store.transaction() as tx:
        call = await tx.calls.apply(handoff.call_id, CallEvent.AGENT_CONNECTED,
                                    seen=CallState.HANDOFF_PENDING)
        steps = [(t.from_state, t.event, t.to_state)
                 for t in await tx.calls.history(handoff.call_id)]
    assert call.state is CallState.WITH_AGENT
    assert steps[-1] == ("with_agent", "agent_connected", "with_agent")
    async with store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.RETURN_TO_AI)
    refused = None
    try:
        async with store.transaction() as tx:
            await tx.handoffs.apply(handoff.id, HandoffEvent.END, seen=HandoffState.CONNECTED)
    except InvalidTransition as exc:
        refused = exc
    assert refused is not None
    assert str(refused) == "handoff: no transition from 'returned_to_ai' on 'end'"


async def test_two_processes_ending_one_handoff_two_ways_at_once_apply_one_step(
    store: Store, store_url: str, clock: FakeClock,
) -> None:
    # The agent hands the caller back to the AI as the caller hangs up, the two handled
    # by two controller processes: one UPDATE matches, the others match nothing and are
    # refused with the state the winner left, as when each read the row first.
    handoff = await connected_handoff(store)
    other_process = create_store_engine(store_url)
    events = [HandoffEvent.RETURN_TO_AI, HandoffEvent.END] * 10
    try:
        stores = [store, Store(other_process, clock)]

        async def step(index: int) -> Handoff:
            async with stores[index % 2].transaction() as tx:
                return await tx.handoffs.apply(handoff.id, events[index],
                                               seen=HandoffState.CONNECTED)

        outcomes = await asyncio.gather(*(step(i) for i in range(len(events))),
                                        return_exceptions=True)
    finally:
        await other_process.dispose()
    won = [o for o in outcomes if isinstance(o, Handoff)]
    refused = [str(o) for o in outcomes if isinstance(o, InvalidTransition)]
    assert len(won) == 1, outcomes
    assert sorted(refused) == sorted(
        f"handoff: no transition from {won[0].state.value!r} on {event.value!r}"
        for index, event in enumerate(events) if outcomes[index] is not won[0])
    async with store.transaction() as tx:
        ended = [t for t in await tx.calls.history(handoff.call_id)
                 if t.handoff_id == handoff.id and t.from_state == "connected"]
    assert len(ended) == 1
