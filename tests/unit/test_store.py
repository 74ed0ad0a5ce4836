"""The store against a real database built by the Alembic migration (SQLite file, and
PostgreSQL: the session's server, see tests/conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import aiosqlite
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event as sql_event
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from handoff.agents import Presence
from handoff.assistants import FallbackKind, HandoffLevel
from handoff.calls import CallEvent, CallOutcome, CallState, Speaker
from handoff.handoffs import FailureReason, HandoffEvent, HandoffState
from handoff.states import InvalidTransition
from handoff.store import (
    AgentBusy,
    AlreadyTaken,
    NotFound,
    NotOfferable,
    OffDuty,
    Store,
    create_store_engine,
    schema_is_current,
    upgrade_to_head,
)
from handoff.store.models import Agent, Base, Call, Handoff
from handoff.topics import Topic
from tests.store_fixtures import FakeClock

RACERS = 50


async def new_call(store: Store, *, answered: bool = True) -> Call:
    async with store.transaction() as tx:
        call = await tx.calls.create(
            caller_number="+33123456789", caller_name="Jeanne", caller_channel_id="1700.1"
        )
        if answered:
            call = await tx.calls.apply(
                call.id, CallEvent.ANSWER, bridge_id="bridge-1", ai_channel_id="ai-1"
            )
    return call


async def new_agents(
    store: Store, count: int, *, on_duty: bool = True, login: str = "agent"
) -> list[Agent]:
    """Agents on duty and available (those who take cards), unless `on_duty` is off."""
    async with store.transaction() as tx:
        agents = [
            await tx.agents.create(
                login=f"{login}{n}",
                display_name=f"{login.title()} {n}",
                sip_user=f"sb-{login}-{n}",
                sip_password=f"secret-{n}",
            )
            for n in range(count)
        ]
        if on_duty:
            agents = [await tx.agents.set_duty(agent.id, True) for agent in agents]
            agents = [await tx.agents.set_presence(a.id, Presence.AVAILABLE) for a in agents]
    return agents


async def offered_handoff(
    store: Store, call: Call, *, target_agent_id: int | None = None
) -> Handoff:
    async with store.transaction() as tx:
        await tx.calls.apply(call.id, CallEvent.REQUEST_HANDOFF)
        handoff = await tx.handoffs.request(
            call.id,
            reason="caller_request",
            topic="billing",
            priority=1,
            summary="Caller disputes an invoice",
            target_agent_id=target_agent_id,
        )
        return await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)


async def accept(store: Store, handoff_id: int, agent_id: int) -> Handoff:
    async with store.transaction() as tx:
        return await tx.handoffs.accept(handoff_id, agent_id)


async def race(store: Store, handoff_id: int, agents: list[Agent]) -> list[object]:
    return await asyncio.gather(
        *(accept(store, handoff_id, agent.id) for agent in agents), return_exceptions=True
    )


def assert_one_winner(outcomes: list[object], handoff: Handoff) -> Handoff:
    winners = [o for o in outcomes if isinstance(o, Handoff)]
    losers = [o for o in outcomes if isinstance(o, AlreadyTaken)]
    others = [o for o in outcomes if not isinstance(o, Handoff | AlreadyTaken)]
    assert others == []
    assert len(winners) == 1
    assert len(losers) == len(outcomes) - 1
    winner = winners[0]
    assert winner.state is HandoffState.ACCEPTED
    assert {loser.taken_by for loser in losers} == {winner.accepted_by}
    assert all(loser.handoff_id == handoff.id for loser in losers)
    return winner


# --- schema --------------------------------------------------------------------------


def _model_drift(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def test_the_migration_builds_exactly_the_tables_the_models_describe(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(_model_drift) == []
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {table.name for table in Base.metadata.sorted_tables} <= tables
    assert await schema_is_current(engine)


async def test_upgrading_an_up_to_date_database_changes_nothing(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)
    assert await schema_is_current(engine)


async def test_states_are_stored_as_their_lowercase_names(store: Store) -> None:
    call = await new_call(store)
    async with store.engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT state FROM calls WHERE id = :id"), {"id": call.id}
        )
    assert stored == "with_ai"


async def test_timestamps_come_back_timezone_aware_in_utc(store: Store, clock: FakeClock) -> None:
    call = await new_call(store)
    async with store.transaction() as tx:
        reread = await tx.calls.get(call.id)
    assert reread.started_at == clock.now
    assert reread.started_at.utcoffset() == timedelta(0)


async def test_a_naive_timestamp_is_refused(store: Store) -> None:
    call = await new_call(store)
    with pytest.raises(Exception, match="naive datetime"):
        async with store.transaction() as tx:
            await tx.transcripts.append(call.id, Speaker.AI, "Hello", at=datetime(2025, 1, 1))


async def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError):
        async with store.transaction() as tx:
            await tx.transcripts.append("no-such-call", Speaker.CALLER, "Hello?")


async def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.calls.create(caller_number="+3300", caller_channel_id="1700.9")
            raise RuntimeError("controller crashed mid-step")
    async with store.transaction() as tx:
        assert await tx.calls.open_calls() == []


# --- calls ---------------------------------------------------------------------------


async def test_a_call_is_answered_with_its_bridge_and_ai_leg(
    store: Store, clock: FakeClock
) -> None:
    async with store.transaction() as tx:
        call = await tx.calls.create(caller_number="+3301", caller_channel_id="1700.2")
        assert call.state is CallState.NEW
        assert call.version == 1
        clock.advance(1)
        call = await tx.calls.apply(
            call.id, CallEvent.ANSWER, bridge_id="bridge-2", ai_channel_id="ai-2"
        )
    assert call.state is CallState.WITH_AI
    assert (call.bridge_id, call.ai_channel_id) == ("bridge-2", "ai-2")
    assert call.answered_at == clock.now
    assert call.version == 2


async def test_a_call_moves_to_the_agent_and_ends_with_an_outcome(
    store: Store, clock: FakeClock
) -> None:
    call = await new_call(store)
    async with store.transaction() as tx:
        await tx.calls.apply(call.id, CallEvent.REQUEST_HANDOFF)
        await tx.calls.apply(
            call.id, CallEvent.AGENT_CONNECTED, agent_channel_id="agent-1", ai_channel_id=None
        )
        clock.advance(30)
        closed = await tx.calls.close(
            call.id, CallOutcome.COMPLETED_BY_AGENT, end_cause="Normal Clearing"
        )
        history = await tx.calls.history(call.id)
    assert closed.state is CallState.ENDED
    assert closed.outcome is CallOutcome.COMPLETED_BY_AGENT
    assert closed.end_cause == "Normal Clearing"
    assert closed.ended_at == clock.now
    assert (closed.agent_channel_id, closed.ai_channel_id) == ("agent-1", None)
    assert [(t.from_state, t.event, t.to_state) for t in history] == [
        ("new", "answer", "with_ai"),
        ("with_ai", "request_handoff", "handoff_pending"),
        ("handoff_pending", "agent_connected", "with_agent"),
        ("with_agent", "end", "ended"),
    ]


async def test_an_invalid_call_event_raises_and_changes_nothing(store: Store) -> None:
    call = await new_call(store, answered=False)
    with pytest.raises(InvalidTransition):
        async with store.transaction() as tx:
            await tx.calls.apply(call.id, CallEvent.AGENT_CONNECTED)
    async with store.transaction() as tx:
        reread = await tx.calls.get(call.id)
        assert await tx.calls.history(call.id) == []
    assert (reread.state, reread.version) == (CallState.NEW, 1)


async def test_a_call_is_only_ended_through_close_so_it_gets_an_outcome(store: Store) -> None:
    call = await new_call(store)
    with pytest.raises(ValueError, match="close"):
        async with store.transaction() as tx:
            await tx.calls.apply(call.id, CallEvent.END)


async def test_an_unknown_call_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        async with store.transaction() as tx:
            await tx.calls.apply("no-such-call", CallEvent.ANSWER)


async def test_open_calls_are_those_not_ended(store: Store) -> None:
    live = await new_call(store)
    over = await new_call(store)
    async with store.transaction() as tx:
        await tx.calls.close(over.id, CallOutcome.COMPLETED_BY_AI)
        assert [call.id for call in await tx.calls.open_calls()] == [live.id]


async def test_the_recording_path_is_kept_on_the_call(store: Store) -> None:
    call = await new_call(store)
    async with store.transaction() as tx:
        updated = await tx.calls.set_recording(call.id, "/var/spool/switchboard/call.wav")
    assert updated.recording_path == "/var/spool/switchboard/call.wav"
    assert updated.version == call.version + 1


async def test_two_processes_moving_one_call_at_once_apply_the_event_once(
    store: Store, store_url: str, clock: FakeClock
) -> None:
    call = await new_call(store)
    other_process = create_store_engine(store_url)
    try:
        stores = [store, Store(other_process, clock)]

        async def request(index: int) -> Call:
            async with stores[index % 2].transaction() as tx:
                return await tx.calls.apply(call.id, CallEvent.REQUEST_HANDOFF)

        outcomes = await asyncio.gather(*(request(i) for i in range(20)), return_exceptions=True)
    finally:
        await other_process.dispose()
    moved = [o for o in outcomes if isinstance(o, Call)]
    refused = [o for o in outcomes if isinstance(o, InvalidTransition)]
    assert len(moved) == 1
    assert len(refused) == 19
    assert moved[0].version == call.version + 1
    async with store.transaction() as tx:
        assert len(await tx.calls.history(call.id)) == 2


# --- handoffs ------------------------------------------------------------------------


async def test_a_handoff_records_who_and_when_at_each_step(store: Store, clock: FakeClock) -> None:
    call = await new_call(store)
    [agent] = await new_agents(store, 1)
    handoff = await offered_handoff(store, call)
    assert handoff.offered_at == clock.now
    clock.advance(4)
    accepted = await accept(store, handoff.id, agent.id)
    assert (accepted.accepted_by, accepted.accepted_at) == (agent.id, clock.now)
    async with store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.DIAL_AGENT)
        clock.advance(1)
        connected = await tx.handoffs.apply(handoff.id, HandoffEvent.AGENT_ANSWERED)
        assert connected.connected_at == clock.now
        clock.advance(60)
        done = await tx.handoffs.apply(handoff.id, HandoffEvent.END)
        steps = [
            (t.from_state, t.event, t.to_state)
            for t in await tx.calls.history(call.id)
            if t.handoff_id == handoff.id
        ]
    assert done.state is HandoffState.COMPLETED
    assert done.ended_at == clock.now
    assert done.failure_reason is None
    assert done.version == 6
    assert steps == [
        ("requested", "offer", "offered"),
        ("offered", "accept", "accepted"),
        ("accepted", "dial_agent", "connecting"),
        ("connecting", "agent_answered", "connected"),
        ("connected", "end", "completed"),
    ]


async def test_fifty_agents_accepting_one_card_at_once_exactly_one_wins(store: Store) -> None:
    call = await new_call(store)
    agents = await new_agents(store, RACERS)
    handoff = await offered_handoff(store, call)
    winner = assert_one_winner(await race(store, handoff.id, agents), handoff)
    async with store.transaction() as tx:
        stored = await tx.handoffs.get(handoff.id)
        accepts = [t for t in await tx.calls.history(call.id) if t.event == "accept"]
    assert (stored.state, stored.accepted_by) == (HandoffState.ACCEPTED, winner.accepted_by)
    assert stored.version == handoff.version + 1
    assert len(accepts) == 1


async def test_fifty_accepts_from_two_processes_still_have_one_winner(
    store: Store, store_url: str, clock: FakeClock
) -> None:
    call = await new_call(store)
    agents = await new_agents(store, RACERS)
    handoff = await offered_handoff(store, call)
    other_process = create_store_engine(store_url)
    try:
        other = Store(other_process, clock)
        outcomes = await asyncio.gather(
            *(
                accept(store if n % 2 else other, handoff.id, agent.id)
                for n, agent in enumerate(agents)
            ),
            return_exceptions=True,
        )
    finally:
        await other_process.dispose()
    assert_one_winner(list(outcomes), handoff)


async def test_a_handoff_not_yet_offered_cannot_be_accepted(store: Store) -> None:
    call = await new_call(store)
    [agent] = await new_agents(store, 1)
    async with store.transaction() as tx:
        handoff = await tx.handoffs.request(call.id, reason="ai_decision")
    with pytest.raises(NotOfferable) as refused:
        await accept(store, handoff.id, agent.id)
    assert refused.value.state is HandoffState.REQUESTED


async def test_a_card_withdrawn_because_the_caller_hung_up_cannot_be_accepted(
    store: Store,
) -> None:
    call = await new_call(store)
    [agent] = await new_agents(store, 1)
    handoff = await offered_handoff(store, call)
    async with store.transaction() as tx:
        abandoned = await tx.handoffs.apply(handoff.id, HandoffEvent.CALLER_HUNG_UP)
    assert abandoned.state is HandoffState.ABANDONED
    assert abandoned.failure_reason is FailureReason.CALLER_HUNG_UP
    with pytest.raises(NotOfferable) as refused:
        await accept(store, handoff.id, agent.id)
    assert refused.value.state is HandoffState.ABANDONED


async def test_a_late_accept_after_the_winner_failed_still_names_the_winner(
    store: Store,
) -> None:
    call = await new_call(store)
    first, late = await new_agents(store, 2)
    handoff = await offered_handoff(store, call)
    await accept(store, handoff.id, first.id)
    async with store.transaction() as tx:
        await tx.handoffs.apply(
            handoff.id, HandoffEvent.FAIL, failure_reason=FailureReason.AGENT_LEG_FAILED
        )
    with pytest.raises(AlreadyTaken) as taken:
        await accept(store, handoff.id, late.id)
    assert (taken.value.taken_by, taken.value.state) == (first.id, HandoffState.FAILED)


async def test_a_transfer_card_can_only_be_accepted_by_its_target(store: Store) -> None:
    call = await new_call(store)
    target, bystander = await new_agents(store, 2)
    handoff = await offered_handoff(store, call, target_agent_id=target.id)
    with pytest.raises(NotOfferable, match=f"agent {target.id} only"):
        await accept(store, handoff.id, bystander.id)
    assert (await accept(store, handoff.id, target.id)).accepted_by == target.id


async def test_a_handoff_assigned_to_one_agent_goes_through_every_step_to_connecting(
    store: Store,
) -> None:
    call = await new_call(store)
    # A supervisor taking over, an agent calling back: neither has to be on duty.
    [agent] = await new_agents(store, 1, on_duty=False)
    async with store.transaction() as tx:
        handoff = await tx.handoffs.assign(call.id, agent.id, reason="call_back",
                                           summary="called back by agent0")
        steps = [(t.from_state, t.event, t.to_state)
                 for t in await tx.calls.history(call.id) if t.handoff_id == handoff.id]
        busy = await tx.agents.busy_agent_ids()
    assert handoff.state is HandoffState.CONNECTING
    assert (handoff.accepted_by, handoff.target_agent_id) == (agent.id, agent.id)
    assert steps == [
        ("requested", "offer", "offered"),
        ("offered", "accept", "accepted"),
        ("accepted", "dial_agent", "connecting"),
    ]
    assert agent.id in busy


async def test_an_agent_off_duty_cannot_accept_and_the_card_stays_on_offer(
    store: Store,
) -> None:
    # The tab may not know yet: its agent went off duty in another tab a moment ago.
    call = await new_call(store)
    [resting] = await new_agents(store, 1, on_duty=False)
    [working] = await new_agents(store, 1, login="worker")
    handoff = await offered_handoff(store, call)
    with pytest.raises(OffDuty):
        await accept(store, handoff.id, resting.id)
    assert (await accept(store, handoff.id, working.id)).accepted_by == working.id


async def test_an_agent_on_a_call_cannot_accept_a_second_card_which_stays_on_offer(
    store: Store,
) -> None:
    ada, grace = await new_agents(store, 2)
    first = await offered_handoff(store, await new_call(store))
    second = await offered_handoff(store, await new_call(store))
    await accept(store, first.id, ada.id)
    with pytest.raises(AgentBusy) as refused:
        await accept(store, second.id, ada.id)
    assert refused.value.why == "on a call"
    assert (await accept(store, second.id, grace.id)).accepted_by == grace.id


async def test_an_agent_whose_call_is_set_up_or_connected_stays_busy_until_it_ends(
    store: Store,
) -> None:
    [ada] = await new_agents(store, 1)
    first = await offered_handoff(store, await new_call(store))
    await accept(store, first.id, ada.id)
    for event in (HandoffEvent.DIAL_AGENT, HandoffEvent.AGENT_ANSWERED):
        async with store.transaction() as tx:
            await tx.handoffs.apply(first.id, event)
        second = await offered_handoff(store, await new_call(store))
        with pytest.raises(AgentBusy):
            await accept(store, second.id, ada.id)
    async with store.transaction() as tx:
        await tx.handoffs.apply(first.id, HandoffEvent.END)
    assert (await accept(store, second.id, ada.id)).accepted_by == ada.id


async def test_an_agent_in_wrap_up_takes_no_card_but_may_call_back(store: Store) -> None:
    [ada] = await new_agents(store, 1)
    async with store.transaction() as tx:
        await tx.agents.set_presence(ada.id, Presence.WRAP_UP)
    card = await offered_handoff(store, await new_call(store))
    with pytest.raises(AgentBusy) as refused:
        await accept(store, card.id, ada.id)
    assert refused.value.why == "in wrap-up"
    # Calling a customer back is what wrap-up is for; a call-back is assigned, not offered.
    call_back = await new_call(store)
    async with store.transaction() as tx:
        assigned = await tx.handoffs.assign(call_back.id, ada.id, reason="call_back",
                                            summary="called back")
    assert assigned.accepted_by == ada.id


async def test_an_agent_on_a_call_cannot_be_assigned_another(store: Store) -> None:
    [ada] = await new_agents(store, 1)
    await accept(store, (await offered_handoff(store, await new_call(store))).id, ada.id)
    call_back = await new_call(store)
    with pytest.raises(AgentBusy):
        async with store.transaction() as tx:
            await tx.handoffs.assign(call_back.id, ada.id, reason="call_back",
                                     summary="called back")


async def test_one_agent_accepting_many_cards_at_once_from_two_processes_wins_one(
    store: Store, store_url: str, clock: FakeClock
) -> None:
    # Two tabs, or the socket and a POST, or two controller processes: the same agent's
    # accepts of different cards arrive together; the phone must ring for one of them.
    [ada] = await new_agents(store, 1)
    cards = [await offered_handoff(store, await new_call(store)) for _ in range(RACERS // 5)]
    other_process = create_store_engine(store_url)
    try:
        other = Store(other_process, clock)
        outcomes = await asyncio.gather(
            *(accept(store if n % 2 else other, card.id, ada.id)
              for n, card in enumerate(cards)),
            return_exceptions=True,
        )
    finally:
        await other_process.dispose()
    won = [o for o in outcomes if isinstance(o, Handoff)]
    assert len(won) == 1, outcomes
    assert all(isinstance(o, AgentBusy) for o in outcomes if o not in won), outcomes
    async with store.transaction() as tx:
        assert [h.id for h in await tx.handoffs.offered()] == sorted(
            c.id for c in cards if c.id != won[0].id)


async def test_an_accept_on_sqlite_is_decided_by_its_one_conditional_update(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An open line's caller waits on what the accept does before the bridge move: on
    # SQLite the handoff's UPDATE alone (its write lock already orders two accepts of one
    # agent), sent as one call to the driver's thread rather than SQLAlchemy's four (a
    # cursor, the statement, its rows, closing); PostgreSQL writes the agent's row first,
    # for its row lock.
    [ada] = await new_agents(store, 1)
    card = await offered_handoff(store, await new_call(store))
    statements: list[str] = []
    driver_calls: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]).split()[0])

    real_call: Any = aiosqlite.Connection._execute

    async def counted_call(self: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
        driver_calls.append(getattr(fn, "__name__", repr(fn)))
        return await real_call(self, fn, *args, **kw)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted_call)
    sql_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with store.transaction() as tx:
            won = await tx.handoffs.accept(card.id, ada.id)
            decided, calls = list(statements), list(driver_calls)
    finally:
        sql_event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert won.accepted_by == ada.id
    assert (won.state, won.version) == (HandoffState.ACCEPTED, card.version + 1)
    assert won.accepted_at is not None and won.accepted_at.tzinfo is not None
    if engine.dialect.name == "sqlite":
        assert len(calls) == 1, calls
    else:
        assert decided == ["UPDATE", "UPDATE"]


async def test_an_accept_rolled_back_leaves_the_card_on_offer_for_the_next_agent(
    store: Store,
) -> None:
    # The ringing path's dial fails after the UPDATE: the transaction rolls back, and
    # the UPDATE sent straight to SQLite's driver goes with it.
    [ada, bob] = await new_agents(store, 2)
    card = await offered_handoff(store, await new_call(store))
    with pytest.raises(RuntimeError, match="dial failed"):
        async with store.transaction() as tx:
            await tx.handoffs.accept(card.id, ada.id)
            assert (await tx.handoffs.get(card.id)).accepted_by == ada.id
            raise RuntimeError("dial failed")
    async with store.transaction() as tx:
        assert [h.id for h in await tx.handoffs.offered()] == [card.id]
        assert await tx.handoffs.accept(card.id, bob.id) is not None
        steps = [t.event for t in await tx.calls.history(card.call_id)
                 if t.handoff_id == card.id]
    assert steps == ["offer", "accept"]


async def test_a_step_writes_its_ledger_line_without_the_orms_unit_of_work(
    store: Store,
) -> None:
    # Every step of every call and handoff writes one transition row, several per
    # handoff on the controller's one event loop: a plain INSERT, not an ORM flush.
    call = await new_call(store)
    flushes: list[object] = []

    def flushed(session: object, *_: object) -> None:
        flushes.append(session)

    sql_event.listen(Session, "before_flush", flushed)
    try:
        async with store.transaction() as tx:
            await tx.calls.apply(call.id, CallEvent.REQUEST_HANDOFF)
    finally:
        sql_event.remove(Session, "before_flush", flushed)
    assert flushes == []
    async with store.transaction() as tx:
        last = (await tx.calls.history(call.id))[-1]
    assert (last.from_state, last.event, last.to_state) == (
        CallState.WITH_AI, CallEvent.REQUEST_HANDOFF, CallState.HANDOFF_PENDING)


async def test_an_accept_and_the_steps_after_it_are_recorded_in_order(store: Store) -> None:
    # The accept leaves its line for the commit; the steps after it in the same
    # transaction write theirs at once, after it.
    [ada] = await new_agents(store, 1)
    call = await new_call(store)
    card = await offered_handoff(store, call)
    async with store.transaction() as tx:
        await tx.handoffs.accept(card.id, ada.id)
        await tx.handoffs.apply(card.id, HandoffEvent.DIAL_AGENT, agent_channel_id="leg")
        await tx.handoffs.apply(card.id, HandoffEvent.AGENT_ANSWERED)
        await tx.calls.apply(call.id, CallEvent.AGENT_CONNECTED)
    async with store.transaction() as tx:
        steps = [t.event for t in await tx.calls.history(call.id)][-4:]
    assert steps == [HandoffEvent.ACCEPT, HandoffEvent.DIAL_AGENT,
                     HandoffEvent.AGENT_ANSWERED, CallEvent.AGENT_CONNECTED]


async def test_accepting_an_unknown_handoff_is_not_found(store: Store) -> None:
    [agent] = await new_agents(store, 1)
    with pytest.raises(NotFound):
        await accept(store, 4242, agent.id)


async def test_a_failed_handoff_needs_a_reason(store: Store) -> None:
    call = await new_call(store)
    handoff = await offered_handoff(store, call)
    with pytest.raises(ValueError, match="failure reason"):
        async with store.transaction() as tx:
            await tx.handoffs.apply(handoff.id, HandoffEvent.FAIL)
    async with store.transaction() as tx:
        failed = await tx.handoffs.apply(
            handoff.id, HandoffEvent.FAIL, failure_reason=FailureReason.NO_AGENTS
        )
    assert (failed.state, failed.failure_reason) == (HandoffState.FAILED, FailureReason.NO_AGENTS)


async def test_a_failure_reason_on_a_success_is_refused(store: Store) -> None:
    call = await new_call(store)
    async with store.transaction() as tx:
        handoff = await tx.handoffs.request(call.id, reason="caller_request")
    with pytest.raises(ValueError, match="makes no sense"):
        async with store.transaction() as tx:
            await tx.handoffs.apply(
                handoff.id, HandoffEvent.OFFER, failure_reason=FailureReason.AGENT_REJECTED
            )


async def test_a_timeout_implies_its_failure_reason(store: Store) -> None:
    call = await new_call(store)
    handoff = await offered_handoff(store, call)
    async with store.transaction() as tx:
        timed_out = await tx.handoffs.apply(handoff.id, HandoffEvent.TIME_OUT)
    assert (timed_out.state, timed_out.failure_reason) == (
        HandoffState.TIMED_OUT,
        FailureReason.TIMEOUT,
    )


async def test_accept_goes_through_accept_not_apply(store: Store) -> None:
    call = await new_call(store)
    handoff = await offered_handoff(store, call)
    with pytest.raises(ValueError, match="accept"):
        async with store.transaction() as tx:
            await tx.handoffs.apply(handoff.id, HandoffEvent.ACCEPT)


async def test_cards_on_offer_are_listed_most_urgent_then_longest_waiting(
    store: Store, clock: FakeClock
) -> None:
    calls = [await new_call(store) for _ in range(3)]
    early = await offered_handoff(store, calls[0])
    clock.advance(5)
    later = await offered_handoff(store, calls[1])
    async with store.transaction() as tx:
        await tx.calls.apply(calls[2].id, CallEvent.REQUEST_HANDOFF)
        urgent = await tx.handoffs.request(calls[2].id, reason="restricted_topic", priority=9)
        await tx.handoffs.apply(urgent.id, HandoffEvent.OFFER)
        offered = [handoff.id for handoff in await tx.handoffs.offered()]
    assert offered == [urgent.id, early.id, later.id]


async def test_open_handoffs_leave_out_finished_ones(store: Store) -> None:
    call = await new_call(store)
    handoff = await offered_handoff(store, call)
    async with store.transaction() as tx:
        assert [h.id for h in await tx.handoffs.open_handoffs()] == [handoff.id]
        assert [h.id for h in await tx.handoffs.open_for_call(call.id)] == [handoff.id]
        await tx.handoffs.apply(handoff.id, HandoffEvent.TIME_OUT)
        await tx.calls.apply(call.id, CallEvent.HANDOFF_FAILED)
        retry = await tx.handoffs.request(call.id, reason="caller_request", attempt=2)
        assert [h.id for h in await tx.handoffs.open_handoffs()] == [retry.id]
        assert [h.attempt for h in await tx.handoffs.for_call(call.id)] == [1, 2]


# --- agents --------------------------------------------------------------------------


async def test_available_agents_are_on_duty_present_and_not_on_a_call(store: Store) -> None:
    free, busy, away, off_duty = await new_agents(store, 4)
    call = await new_call(store)
    handoff = await offered_handoff(store, call)
    await accept(store, handoff.id, busy.id)
    async with store.transaction() as tx:
        await tx.agents.set_presence(away.id, Presence.AWAY)
        await tx.agents.set_duty(off_duty.id, False)
        available = [agent.id for agent in await tx.agents.available()]
        assert await tx.agents.busy_agent_ids() == {busy.id}
    assert available == [free.id]


async def test_an_agent_is_free_again_once_the_handoff_is_over(store: Store) -> None:
    [agent] = await new_agents(store, 1)
    call = await new_call(store)
    handoff = await offered_handoff(store, call)
    await accept(store, handoff.id, agent.id)
    async with store.transaction() as tx:
        await tx.handoffs.apply(
            handoff.id, HandoffEvent.FAIL, failure_reason=FailureReason.AGENT_VANISHED
        )
        assert [a.id for a in await tx.agents.available()] == [agent.id]


async def test_available_agents_hold_every_skill_asked_for(store: Store) -> None:
    async with store.transaction() as tx:
        for login, skills in [("fr", ["french"]), ("both", ["french", "billing"])]:
            agent = await tx.agents.create(
                login=login,
                display_name=login,
                sip_user=f"sb-{login}",
                sip_password="x",
                skills=skills,
            )
            await tx.agents.set_duty(agent.id, True)
            await tx.agents.set_presence(agent.id, Presence.AVAILABLE)
        found = [a.login for a in await tx.agents.available(skills=["billing", "french"])]
        everyone = [a.login for a in await tx.agents.available()]
    assert found == ["both"]
    assert everyone == ["fr", "both"]


async def test_agents_are_found_by_login_and_sip_user(store: Store) -> None:
    [agent] = await new_agents(store, 1)
    async with store.transaction() as tx:
        by_login = await tx.agents.by_login("agent0")
        by_sip = await tx.agents.by_sip_user("sb-agent-0")
        assert await tx.agents.by_login("nobody") is None
    assert by_login is not None
    assert by_sip is not None
    assert by_login.id == by_sip.id == agent.id


# --- transcripts, notes, contacts, audit ---------------------------------------------


async def test_the_transcript_reads_back_in_order_and_from_a_moment(
    store: Store, clock: FakeClock
) -> None:
    call = await new_call(store)
    async with store.transaction() as tx:
        await tx.transcripts.append(call.id, Speaker.AI, "Hello, how can I help?")
        await tx.transcripts.append(call.id, Speaker.CALLER, "A person, please.")
        human_part = clock.advance(10)
        await tx.transcripts.append(call.id, Speaker.AGENT, "Hi, this is Ann.")
        whole = await tx.transcripts.for_call(call.id)
        since = await tx.transcripts.for_call(call.id, since=human_part)
    assert [(s.speaker, s.text) for s in whole] == [
        (Speaker.AI, "Hello, how can I help?"),
        (Speaker.CALLER, "A person, please."),
        (Speaker.AGENT, "Hi, this is Ann."),
    ]
    assert [s.text for s in since] == ["Hi, this is Ann."]


async def test_notes_belong_to_a_call_and_to_the_caller(store: Store) -> None:
    call = await new_call(store)
    [agent] = await new_agents(store, 1)
    async with store.transaction() as tx:
        await tx.notes.add(
            "Wants a refund",
            call_id=call.id,
            contact_number=call.caller_number,
            author_id=agent.id,
        )
        await tx.notes.add("VIP", contact_number=call.caller_number)
        assert [n.text for n in await tx.notes.for_call(call.id)] == ["Wants a refund"]
        assert [n.text for n in await tx.notes.for_contact(call.caller_number)] == [
            "Wants a refund",
            "VIP",
        ]
    with pytest.raises(ValueError):
        async with store.transaction() as tx:
            await tx.notes.add("orphan")


async def test_a_contact_name_is_saved_and_replaced(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.contacts.name_for("+3312") is None
        await tx.contacts.save("+3312", "J. Martin")
    async with store.transaction() as tx:
        await tx.contacts.save("+3312", "Jeanne Martin")
    async with store.transaction() as tx:
        assert await tx.contacts.name_for("+3312") == "Jeanne Martin"


async def test_audit_events_are_kept_newest_first(store: Store, clock: FakeClock) -> None:
    async with store.transaction() as tx:
        await tx.audit.record("ann", "duty_on", "agent:ann")
        clock.advance(1)
        await tx.audit.record("sup", "take_over", "call:42", {"from_agent": "ann"})
    async with store.transaction() as tx:
        recent = await tx.audit.recent()
    assert [(e.action, e.detail) for e in recent] == [
        ("take_over", {"from_agent": "ann"}),
        ("duty_on", {}),
    ]


async def test_an_assistant_with_a_fallback_number_must_name_it(store: Store) -> None:
    with pytest.raises(ValueError, match="fallback_number"):
        async with store.transaction() as tx:
            await tx.assistants.create(
                name="reception",
                numbers=["_100"],
                control_token_hash="h",
                fallback_kind=FallbackKind.NUMBER,
            )
    async with store.transaction() as tx:
        assistant = await tx.assistants.create(
            name="reception",
            numbers=["_100"],
            control_token_hash="h",
            handoff_level=HandoffLevel.QUICK,
            restricted_topics=[Topic("medical", ("doctor",))],
        )
        call = await tx.calls.create(
            caller_number="+3313", caller_channel_id="1700.5", assistant_id=assistant.id
        )
        by_name = await tx.assistants.by_name("reception")
    assert by_name is not None
    assert call.assistant_id == by_name.id == assistant.id
    assert assistant.restricted_topics == [{"name": "medical", "phrases": ["doctor"]}]
