"""The key figures over a scripted day (tests/kpi_day.py) whose answers are worked out
by hand, on SQLite and PostgreSQL: every figure, under each filter; and the presence
history the wrap-up and pause figures are read from, as the desk's and the controller's
changes write it."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest

from handoff.agents import AgentState, Presence, PresenceEvent
from handoff.kpis import KpiFilter, Kpis, StateChange, percentile, state_spans
from handoff.store import Store
from tests.kpi_day import DAY, Day, script_day
from tests.store_fixtures import FakeClock
from web.dashboard.words import Site

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
SITE = Site.of("Europe/Paris")


@pytest.fixture
async def day(store: Store, clock: FakeClock) -> Day:
    # Two days later: the whole day is over, nothing is cut at "now".
    clock.now = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)
    async with store.transaction() as tx:
        alice = await tx.agents.create(login="alice", display_name="Alice",
                                       sip_user="sb-alice", sip_password="a")
        bob = await tx.agents.create(login="bob", display_name="Bob", sip_user="sb-bob",
                                     sip_password="b")
    return await script_day(store, PARIS, alice=alice.id, bob=bob.id)


async def figures(store: Store, **filters: int) -> Kpis:
    since, until = SITE.day_range(DAY.isoformat(), DAY.isoformat())
    assert since is not None and until is not None
    async with store.transaction() as tx:
        return await tx.kpis.figures(KpiFilter(since, until, **filters), PARIS)


def agents(kpis: Kpis) -> dict[str, tuple[int, float, float, dict[str, float]]]:
    return {a.name: (a.handled, a.talk_s, a.wrap_up_s, a.pauses_s) for a in kpis.agents}


async def test_the_days_figures_are_those_worked_out_by_hand(store: Store, day: Day) -> None:
    kpis = await figures(store)
    # Inbound calls of the site's day that ended: the 00:30 one is the site's (23:30 UTC
    # the day before), the call-back, the live call and the next day's are not counted.
    assert (kpis.calls, kpis.contained, kpis.containment) == (10, 4, 0.4)
    # First attempts only: the 14:30 call's second attempt is the same request.
    assert kpis.requests == 6
    assert kpis.reasons == [("caller_asked", 4), ("ai_cannot_help", 1),
                            ("restricted_topic", 1)]
    assert kpis.accept_waits_s == [5, 8, 12, 20, 30]
    assert (kpis.accept_p50_s, kpis.accept_p90_s) == (12, 30)
    assert (kpis.abandoned, kpis.abandoned_share) == (1, 1 / 6)
    assert [(q.name, q.threshold_s, q.answered, q.within, q.not_answered)
            for q in kpis.queues] == [("billing", 20, 4, 3, 0), ("general", 30, 1, 1, 2)]
    assert [q.service_level for q in kpis.queues] == [0.75, 1 / 3]
    assert kpis.service_level == 4 / 7
    assert kpis.requests_per_hour == [0] * 9 + [1, 2, 1, 0, 0, 1, 0, 1] + [0] * 7
    assert kpis.accept_distribution() == [("≤ 5 s", 1), ("≤ 10 s", 1), ("≤ 20 s", 2),
                                          ("≤ 30 s", 1), ("≤ 60 s", 0), ("> 60 s", 0)]
    assert agents(kpis) == {
        "Alice": (3, 660, 150, {"Lunch": 3600}),
        # Away for training since the evening before: counted from the day's midnight;
        # away for lunch at 23:50 until the day ends.
        "Bob": (1, 120, 30, {"Training": 1200, "": 600, "Lunch": 600}),
        "Carol": (0, 0, 0, {}),
    }
    assert [a.pause_s for a in kpis.agents] == [3600, 2400, 0]


async def test_an_assistant_narrows_every_figure_to_its_calls(store: Store, day: Day) -> None:
    kpis = await figures(store, assistant_id=day.sales)
    assert (kpis.calls, kpis.contained, kpis.requests) == (7, 4, 3)
    assert kpis.reasons == [("caller_asked", 2), ("ai_cannot_help", 1)]
    assert (kpis.accept_p50_s, kpis.accept_p90_s, kpis.abandoned) == (12, 12, 1)
    assert [(q.name, q.service_level) for q in kpis.queues] == [("general", 1 / 3)]
    # The agents who took its calls, with all their time (it is not the assistant's).
    assert agents(kpis) == {"Alice": (1, 120, 150, {"Lunch": 3600})}


async def test_a_queue_and_an_agent_narrow_the_figures_about_people(
    store: Store, day: Day,
) -> None:
    billing = await figures(store, queue_id=day.billing)
    assert (billing.calls, billing.contained) == (10, 4)  # calls are not the queue's
    assert (billing.requests, billing.abandoned) == (3, 0)
    assert billing.reasons == [("caller_asked", 2), ("restricted_topic", 1)]
    assert (billing.accept_p50_s, billing.accept_p90_s) == (8, 30)
    assert billing.service_level == 0.75
    assert {name: row[:2] for name, row in agents(billing).items()} == {
        "Alice": (2, 540), "Bob": (1, 120)}

    bob = await figures(store, agent_id=day.bob)
    assert (bob.requests, bob.reasons) == (2, [("caller_asked", 1), ("restricted_topic", 1)])
    assert (bob.accept_p50_s, bob.accept_p90_s, bob.abandoned) == (5, 30, 0)
    assert [(q.name, q.answered, q.within) for q in bob.queues] == [("billing", 2, 1)]
    assert agents(bob) == {"Bob": (1, 120, 30, {"Training": 1200, "": 600, "Lunch": 600})}


async def test_a_day_without_calls_has_no_rates_rather_than_zero(store: Store) -> None:
    kpis = await figures(store)
    assert (kpis.calls, kpis.containment, kpis.accept_p50_s, kpis.service_level,
            kpis.abandoned_share) == (0, None, None, None, None)
    assert kpis.agents == [] and kpis.queues == [] and kpis.reasons == []


async def test_presence_changes_are_kept_as_the_history_the_figures_read(
    store: Store, clock: FakeClock,
) -> None:
    async with store.transaction() as tx:
        ada = await tx.agents.create(login="ada", display_name="Ada", sip_user="sb-ada",
                                     sip_password="x")
        coffee = await tx.pause_reasons.add("Coffee", productive=False)
    start = clock.now
    async with store.transaction() as tx:
        await tx.agents.set_duty(ada.id, True)
    clock.advance(60)
    async with store.transaction() as tx:  # the controller: her part of a call is over
        await tx.agents.try_change_presence(ada.id, PresenceEvent.WRAP_UP_BEGINS,
                                            actor="controller")
    clock.advance(45)
    async with store.transaction() as tx:
        await tx.agents.try_change_presence(ada.id, PresenceEvent.WRAP_UP_ENDS,
                                            actor="controller")
        # Going on duty again from another tab changes nothing: no row.
        await tx.agents.set_duty(ada.id, True)
    clock.advance(100)
    async with store.transaction() as tx:
        await tx.agents.set_presence(ada.id, Presence.AWAY, pause_reason=coffee)
    clock.advance(300)
    async with store.transaction() as tx:
        await tx.agents.set_duty(ada.id, False)
    clock.advance(1000)
    async with store.transaction() as tx:
        kpis = await tx.kpis.figures(KpiFilter(start, start + timedelta(days=1)), UTC)
    assert agents(kpis) == {"Ada": (0, 0, 45, {"Coffee": 300})}


def test_percentiles_are_a_wait_someone_had() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 90) == 7
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9


def test_a_state_holds_until_the_next_change_and_is_cut_at_the_ranges_ends() -> None:
    t0 = datetime(2026, 3, 10, tzinfo=UTC)
    changes = [StateChange(t0 - timedelta(hours=1), AgentState.AWAY, 3),
               StateChange(t0 + timedelta(minutes=10), AgentState.AVAILABLE, None),
               StateChange(t0 + timedelta(minutes=50), AgentState.WRAP_UP, None)]
    assert state_spans(changes, t0, t0 + timedelta(hours=1)) == {
        (AgentState.AWAY, 3): 600, (AgentState.AVAILABLE, None): 2400,
        (AgentState.WRAP_UP, None): 600}
