"""Dashboard sessions in the store (SQLite and PostgreSQL): idle and absolute expiry,
disabled accounts, purge."""

from __future__ import annotations

from handoff.store import Store
from tests.store_fixtures import FakeClock
from web.dashboard.sessions import Sessions, SessionTimes

HOUR = 3600.0


async def new_agent(store: Store) -> int:
    async with store.transaction() as tx:
        agent = await tx.agents.create(login="alice", display_name="Alice", sip_user="sb-a",
                                       sip_password="x", password_hash="argon2-hash")
    return agent.id


async def test_a_session_left_idle_past_the_idle_timeout_is_gone(
    store: Store, clock: FakeClock,
) -> None:
    sessions = Sessions(store, clock=clock)
    token, _ = await sessions.start(await new_agent(store))
    clock.advance(1.9 * HOUR)
    assert await sessions.resolve(token) is not None
    clock.advance(2.1 * HOUR)
    assert await sessions.resolve(token) is None


async def test_activity_keeps_a_session_until_the_end_of_the_shift_and_no_longer(
    store: Store, clock: FakeClock,
) -> None:
    sessions = Sessions(store, times=SessionTimes(), clock=clock)
    token, _ = await sessions.start(await new_agent(store))
    for _ in range(11):
        clock.advance(HOUR)
        assert await sessions.resolve(token) is not None
    clock.advance(HOUR)
    assert await sessions.resolve(token) is None


async def test_disabling_an_account_ends_its_sessions(store: Store, clock: FakeClock) -> None:
    sessions = Sessions(store, clock=clock)
    agent_id = await new_agent(store)
    token, _ = await sessions.start(agent_id)
    async with store.transaction() as tx:
        await tx.agents.set_password_hash(agent_id, None)
    assert await sessions.resolve(token) is None


async def test_expired_sessions_are_purged_and_live_ones_kept(
    store: Store, clock: FakeClock,
) -> None:
    sessions = Sessions(store, clock=clock)
    agent_id = await new_agent(store)
    old, _ = await sessions.start(agent_id)
    clock.advance(3 * HOUR)
    fresh, viewer = await sessions.start(agent_id)
    assert await sessions.purge_expired() == 1
    assert await sessions.resolve(old) is None
    assert await sessions.resolve(fresh) is not None
    assert await sessions.still_live([viewer.session_hash, "unknown"]) == {viewer.session_hash}
