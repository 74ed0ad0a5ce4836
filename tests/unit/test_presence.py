"""An agent's presence (duty folded in) as a named lifecycle: the table, and the one
guarded write that applies it, logs it and audits it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from itertools import pairwise

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from handoff.agents import (
    CONTROLLER,
    ON_DUTY,
    PRESENCE,
    Presence,
    PresenceEvent,
    is_on_duty,
)
from handoff.states import InvalidTransition
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Agent, AuditEvent
from handoff.store.schema import alembic_config
from tests.store_fixtures import FakeClock

CHOICES = (PresenceEvent.CHOOSE_AVAILABLE, PresenceEvent.CHOOSE_AWAY,
           PresenceEvent.CHOOSE_WRAP_UP)


# ---- the table ---------------------------------------------------------------------------


def test_going_on_duty_makes_an_offline_agent_available_and_twice_changes_nothing() -> None:
    assert PRESENCE.initial is Presence.OFFLINE
    assert PRESENCE.next_state(Presence.OFFLINE, PresenceEvent.GO_ON_DUTY) is Presence.AVAILABLE
    for state in ON_DUTY:
        assert PRESENCE.next_state(state, PresenceEvent.GO_ON_DUTY) is state


def test_off_duty_is_offline_from_every_presence_and_only_going_off_duty_leads_there() -> None:
    for state in Presence:
        assert PRESENCE.next_state(state, PresenceEvent.GO_OFF_DUTY) is Presence.OFFLINE
    into_offline = {event for state in Presence for event in PRESENCE.events_from(state)
                    if PRESENCE.next_state(state, event) is Presence.OFFLINE}
    assert into_offline == {PresenceEvent.GO_OFF_DUTY}


def test_an_agent_off_duty_can_only_go_on_duty_or_stay_off() -> None:
    assert PRESENCE.events_from(Presence.OFFLINE) == {PresenceEvent.GO_ON_DUTY,
                                                      PresenceEvent.GO_OFF_DUTY}
    for event in (*CHOICES, PresenceEvent.WRAP_UP_BEGINS, PresenceEvent.PHONE_LOST):
        with pytest.raises(InvalidTransition):
            PRESENCE.transition_of(Presence.OFFLINE, event, subject="agent=7")


def test_an_agent_on_duty_chooses_any_presence_but_offline_by_the_menu() -> None:
    for state in ON_DUTY:
        assert [PRESENCE.next_state(state, event) for event in CHOICES] == [
            Presence.AVAILABLE, Presence.AWAY, Presence.WRAP_UP]


def test_the_controller_moves_only_an_agent_who_chose_nothing_else() -> None:
    assert PRESENCE.sources_of(PresenceEvent.WRAP_UP_BEGINS) == {Presence.AVAILABLE}
    assert PRESENCE.sources_of(PresenceEvent.WRAP_UP_ENDS) == {Presence.WRAP_UP}
    assert PRESENCE.sources_of(PresenceEvent.PHONE_LOST) == {Presence.AVAILABLE}
    assert PRESENCE.next_state(Presence.WRAP_UP, PresenceEvent.WRAP_UP_ENDS) is (
        Presence.AVAILABLE)
    assert PRESENCE.next_state(Presence.AVAILABLE, PresenceEvent.PHONE_LOST) is Presence.AWAY


def test_every_presence_is_reachable_and_none_ends_the_lifecycle() -> None:
    seen, frontier = set(), [PRESENCE.initial]
    while frontier:
        state = frontier.pop()
        if state not in seen:
            seen.add(state)
            frontier += [PRESENCE.next_state(state, e) for e in PRESENCE.events_from(state)]
    assert seen == set(Presence)
    assert PRESENCE.terminal == frozenset()


def test_a_presence_change_is_logged_from_event_to_against_the_agent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="handoff.states"):
        PRESENCE.transition_of(Presence.AVAILABLE, PresenceEvent.WRAP_UP_BEGINS,
                               subject="agent=7")
    assert caplog.messages == ["presence agent=7: available -> wrap_up_begins -> wrap_up"]


# ---- the guarded write -------------------------------------------------------------------


async def new_agent(store: Store, login: str = "ada") -> Agent:
    async with store.transaction() as tx:
        return await tx.agents.create(login=login, display_name=login.title(),
                                      sip_user=f"sb-{login}", sip_password="s3cret-x")


async def row(store: Store, agent: Agent) -> tuple[Presence, bool]:
    async with store.transaction() as tx:
        found = await tx.agents.get(agent.id)
        return found.presence, found.on_duty


async def audit_lines(store: Store) -> list[AuditEvent]:
    async with store.transaction() as tx:
        return list(reversed(await tx.audit.recent()))


async def test_each_change_writes_presence_and_duty_together_and_one_audit_line(
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    ada = await new_agent(store)
    with caplog.at_level(logging.INFO, logger="handoff.states"):
        async with store.transaction() as tx:
            change = await tx.agents.change_presence(ada.id, PresenceEvent.GO_ON_DUTY,
                                                     actor="ada")
            assert (change.was, change.now, change.agent.on_duty) == (
                Presence.OFFLINE, Presence.AVAILABLE, True)
            await tx.agents.change_presence(ada.id, PresenceEvent.WRAP_UP_BEGINS,
                                            actor=CONTROLLER)
            await tx.agents.change_presence(ada.id, PresenceEvent.GO_OFF_DUTY, actor="ada",
                                            why="signed out")
    assert await row(store, ada) == (Presence.OFFLINE, False)
    assert caplog.messages == [
        f"presence agent={ada.id}: offline -> go_on_duty -> available",
        f"presence agent={ada.id}: available -> wrap_up_begins -> wrap_up",
        f"presence agent={ada.id}: wrap_up -> go_off_duty -> offline",
    ]
    lines = await audit_lines(store)
    assert [(e.actor, e.action, e.subject) for e in lines] == [
        ("ada", "duty_change", f"agent:{ada.id}"),
        (CONTROLLER, "presence_change", f"agent:{ada.id}"),
        ("ada", "duty_change", f"agent:{ada.id}"),
    ]
    assert lines[1].detail == {"from": "available", "event": "wrap_up_begins",
                               "presence": "wrap_up", "on_duty": True}
    assert lines[2].detail["why"] == "signed out"
    assert lines[2].detail["on_duty"] is False


async def test_a_refused_change_writes_nothing_and_audits_nothing(store: Store) -> None:
    ada = await new_agent(store)
    with pytest.raises(InvalidTransition):
        async with store.transaction() as tx:
            await tx.agents.set_presence(ada.id, Presence.AVAILABLE, actor="ada")
    assert await row(store, ada) == (Presence.OFFLINE, False)
    async with store.transaction() as tx:
        refused = await tx.agents.try_change_presence(ada.id, PresenceEvent.WRAP_UP_BEGINS,
                                                      actor=CONTROLLER)
        assert refused is None
        assert await tx.agents.try_change_presence(
            ada.id + 1000, PresenceEvent.GO_ON_DUTY, actor=CONTROLLER) is None
    assert await audit_lines(store) == []


async def test_a_change_to_the_same_presence_writes_nothing_and_audits_nothing(
    store: Store,
) -> None:
    ada = await new_agent(store)
    async with store.transaction() as tx:
        await tx.agents.set_duty(ada.id, True, actor="ada")
        again = await tx.agents.change_presence(ada.id, PresenceEvent.GO_ON_DUTY, actor="ada")
        chosen = await tx.agents.set_presence(ada.id, Presence.AVAILABLE, actor="ada")
    assert not again.changed and chosen.presence is Presence.AVAILABLE
    assert [e.action for e in await audit_lines(store)] == ["duty_change"]


async def test_the_wrap_up_yields_to_the_agent_who_chose_away_between_its_read_and_write(
    store: Store, store_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The controller reads "available" and decides on a wrap-up; before it writes, the
    agent (the web process, another connection) chooses away. The conditional UPDATE
    finds the row changed, the wrap-up is judged again against "away" and refused: the
    agent's choice stands, and only it is audited."""
    ada = await new_agent(store)
    async with store.transaction() as tx:
        await tx.agents.set_duty(ada.id, True, actor="ada")
    other_process = create_store_engine(store_url)
    web = Store(other_process, clock)
    reads: list[Presence] = []

    try:
        async with store.transaction() as tx:
            real_read = tx.agents._presence_of

            async def read_then_let_the_agent_choose(
                agent_id: int,
            ) -> tuple[Presence, Agent] | None:
                found = await real_read(agent_id)
                assert found is not None
                reads.append(found[0])
                if len(reads) == 1:
                    async with web.transaction() as other:
                        await other.agents.set_presence(agent_id, Presence.AWAY, actor="ada")
                return found

            monkeypatch.setattr(tx.agents, "_presence_of", read_then_let_the_agent_choose)
            moved = await tx.agents.try_change_presence(
                ada.id, PresenceEvent.WRAP_UP_BEGINS, actor=CONTROLLER)
    finally:
        await other_process.dispose()
    assert moved is None
    assert reads == [Presence.AVAILABLE, Presence.AWAY]
    assert await row(store, ada) == (Presence.AWAY, True)
    assert [(e.actor, e.detail["event"]) for e in await audit_lines(store)] == [
        ("ada", "go_on_duty"), ("ada", "choose_away")]


async def test_two_processes_changing_one_agent_at_once_leave_an_unbroken_audit_chain(
    store: Store, store_url: str, clock: FakeClock,
) -> None:
    ada = await new_agent(store)
    async with store.transaction() as tx:
        await tx.agents.set_duty(ada.id, True, actor="ada")
    events = [PresenceEvent.WRAP_UP_BEGINS, PresenceEvent.CHOOSE_AWAY,
              PresenceEvent.WRAP_UP_ENDS, PresenceEvent.CHOOSE_AVAILABLE,
              PresenceEvent.PHONE_LOST] * 4
    other_process = create_store_engine(store_url)
    try:
        stores = [store, Store(other_process, clock)]

        async def apply(index: int, event: PresenceEvent) -> None:
            async with stores[index % 2].transaction() as tx:
                await tx.agents.try_change_presence(ada.id, event, actor=CONTROLLER)

        await asyncio.gather(*(apply(i, event) for i, event in enumerate(events)))
    finally:
        await other_process.dispose()
    # Each line starts where the one before it ended: no change was made from a
    # presence the row no longer had, and the row is where the last line left it.
    lines = [e.detail for e in await audit_lines(store)]
    for before, after in pairwise(lines):
        assert after["from"] == before["presence"]
        assert PRESENCE.next_state(Presence(after["from"]),
                                   PresenceEvent(after["event"])).value == after["presence"]
    assert await row(store, ada) == (Presence(lines[-1]["presence"]), True)


# ---- existing rows -----------------------------------------------------------------------


def _to_0004(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "0004")


async def test_the_migration_takes_agents_offline_on_duty_or_present_off_duty_off_duty(
    store_url: str,
) -> None:
    engine = create_store_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to_0004)
            for n, (on_duty, presence) in enumerate(
                [(True, "offline"), (False, "available"), (False, "wrap_up"),
                 (True, "away"), (False, "offline")]
            ):
                await connection.execute(text(
                    "INSERT INTO agents (login, display_name, role, sip_user, sip_password, "
                    "endpoint_kind, skills, on_duty, presence) VALUES (:login, 'A', 'agent', "
                    ":sip, 'pw-secret', 'webrtc', '[]', :on_duty, :presence)"),
                    {"login": f"a{n}", "sip": f"sb-a{n}", "on_duty": on_duty,
                     "presence": presence})
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            rows = (await connection.execute(text(
                "SELECT on_duty, presence FROM agents ORDER BY login"))).all()
    finally:
        await engine.dispose()
    assert [(bool(on_duty), presence) for on_duty, presence in rows] == [
        (False, "offline"), (False, "offline"), (False, "offline"), (True, "away"),
        (False, "offline")]
    assert all(bool(on_duty) == is_on_duty(Presence(p)) for on_duty, p in rows)
