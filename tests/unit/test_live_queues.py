"""Queues' decisions: whom each strategy picks, and on the fake ARI, a card given to one
member for a ring window, moved on when it passes, a member set away after a run of
misses, the maximum wait sending the caller to the fallback, emergencies first, the
accept guard, routing by topic, a transfer to a queue, and the figures recorded. The
same flows run on a real Asterisk in tests/integration/test_queues.py."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from handoff.agents import EndpointKind, Presence
from handoff.assistants import EngineKind
from handoff.calls import CallOutcome
from handoff.controller import LiveServices, build_controller
from handoff.events import EventHub
from handoff.handoffs import HandoffState
from handoff.live import LiveCall, Party, Timing
from handoff.live.offer import CALLBACK_NOTE
from handoff.queues import Candidate, OfferOutcome, Strategy, choose
from handoff.store import NotOfferable, Store, create_store_engine, upgrade_to_head
from handoff.store.models import Handoff, QueueRecord
from tests.unit.fake_ari import FakeAri
from tests.waiting import until

QUICK = Timing(ai_overlap_s=0.0, agent_media_wait_s=0.2, agent_media_poll_s=0.001,
               ring_timeout_s=5, queue_poll_s=0.05)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# ---- whom each strategy picks (pure) -------------------------------------------------------


def _c(agent: int, position: int, *, level: int = 3, idle: int | None = None,
       tries: int = 0) -> Candidate:
    return Candidate(agent, position, level,
                     None if idle is None else T0 + timedelta(minutes=idle), tries)


def test_round_robin_goes_on_after_the_member_offered_last_and_wraps() -> None:
    pool = [_c(1, 0), _c(2, 1), _c(3, 2)]
    assert choose(Strategy.ROUND_ROBIN, pool, members=3).agent_id == 1  # type: ignore[union-attr]
    picks = [choose(Strategy.ROUND_ROBIN, pool, members=3, last_position=p)
             for p in (0, 1, 2)]
    assert [c.agent_id for c in picks if c] == [2, 3, 1]
    # A member not free now is skipped, not waited for.
    assert choose(Strategy.ROUND_ROBIN, [_c(1, 0), _c(3, 2)], members=3,
                  last_position=0).agent_id == 3  # type: ignore[union-attr]


def test_longest_idle_prefers_a_member_without_a_call_then_the_oldest_end() -> None:
    pool = [_c(1, 0, idle=5), _c(2, 1, idle=1), _c(3, 2, idle=9)]
    assert choose(Strategy.LONGEST_IDLE, pool, members=3).agent_id == 2  # type: ignore[union-attr]
    assert choose(Strategy.LONGEST_IDLE, [*pool, _c(4, 3)],
                  members=4).agent_id == 4  # type: ignore[union-attr]


def test_skills_weighted_takes_the_highest_level_and_breaks_ties_by_idle_time() -> None:
    pool = [_c(1, 0, level=3, idle=0), _c(2, 1, level=5, idle=9), _c(3, 2, level=5, idle=2)]
    assert choose(Strategy.SKILLS_WEIGHTED, pool, members=3).agent_id == 3  # type: ignore[union-attr]


def test_a_member_who_missed_the_card_comes_after_everyone_who_has_not() -> None:
    for strategy in (Strategy.ROUND_ROBIN, Strategy.LONGEST_IDLE, Strategy.SKILLS_WEIGHTED):
        pool = [_c(1, 0, level=5, tries=1), _c(2, 1, level=1, idle=9)]
        assert choose(strategy, pool, members=2).agent_id == 2  # type: ignore[union-attr]
    assert choose(Strategy.LONGEST_IDLE, [], members=2) is None
    with pytest.raises(ValueError):
        choose(Strategy.OFFER_ALL, [_c(1, 0)], members=1)


# ---- on the fake ARI -----------------------------------------------------------------------


@dataclass
class Floor:
    ari: FakeAri
    live: LiveServices
    store: Store
    hub: EventHub
    ada: int
    bob: int
    cyd: int

    async def call(self) -> tuple[str, LiveCall]:
        caller = await self.ari.caller_dials()

        async def with_ai() -> LiveCall | None:
            return next((c for c in self.live.control.calls.values()
                         if c.caller == caller and c.ai), None)

        return caller, await until(with_ai)

    async def queue(self, strategy: Strategy, members: list[tuple[int, int]], *,
                    ring_s: int = 1, max_wait_s: int = 30, limit: int = 3,
                    topics: tuple[str, ...] = (), default: bool = True) -> QueueRecord:
        async with self.store.transaction() as tx:
            queue = await tx.queues.create(
                name=f"q{strategy.value}{len(await tx.queues.listed())}", strategy=strategy,
                ring_s=ring_s, max_wait_s=max_wait_s, service_level_s=20,
                no_answer_limit=limit, topics=topics)
            await tx.queues.set_members(queue.id, members)
            if default:
                assistant = await tx.assistants.by_name("receptionist")
                assert assistant is not None
                await tx.queues.set_assistants(queue.id, [assistant.id])
        return queue

    async def handoff(self, handoff_id: int) -> Handoff:
        async with self.store.transaction() as tx:
            return await tx.handoffs.get(handoff_id)

    async def held_by(self, handoff_id: int) -> int | None:
        handoff = await self.handoff(handoff_id)
        return handoff.target_agent_id if handoff.state is HandoffState.OFFERED else None

    async def ask(self, live: LiveCall, priority: str = "normal", topic: str | None = None
                  ) -> int:
        return await self.live.control.request_handoff(
            live.call_id, reason="caller_asked", summary="wants a person", priority=priority,
            topic=topic)

    async def end(self, caller: str, live: LiveCall) -> None:
        await self.ari.hang_up_phone(caller)

        async def closed() -> bool:
            async with self.store.transaction() as tx:
                return (await tx.calls.get(live.call_id)).outcome is not None

        await until(closed)


@pytest.fixture
async def floor(tmp_path: Path) -> AsyncIterator[Floor]:
    engine = create_store_engine(f"sqlite:///{tmp_path}/calls.db")
    await upgrade_to_head(engine)
    store, hub, ari = Store(engine), EventHub(), FakeAri()
    async with store.transaction() as tx:
        await tx.assistants.create(name="receptionist", numbers=["2000"],
                                   engine=EngineKind.AUDIOSOCKET, engine_address="127.0.0.1:9",
                                   control_token_hash=hashlib.sha256(b"t").hexdigest())
        ids = []
        for login in ("ada", "bob", "cyd"):
            agent = await tx.agents.create(login=login, display_name=login.title(),
                                           sip_user=f"{login}-desk", sip_password="x",
                                           endpoint_kind=EndpointKind.DESKPHONE)
            await tx.agents.set_duty(agent.id, True)
            ids.append(agent.id)
    live = build_controller(ari, store, hub, timing=QUICK)
    try:
        yield Floor(ari, live, store, hub, *ids)
        await ari.idle()
        async with store.transaction() as tx:
            assert not list(await tx.calls.open_calls())
        assert not ari.chans and not ari.bridged, (ari.chans, ari.bridged)
    finally:
        await live.close()
        await ari.close()
        await engine.dispose()


async def test_round_robin_gives_the_card_to_one_member_and_moves_on_when_it_passes(
    floor: Floor,
) -> None:
    # A ring window long enough that a loaded machine still checks Ada's turn inside it.
    await floor.queue(Strategy.ROUND_ROBIN, [(floor.ada, 3), (floor.bob, 3), (floor.cyd, 3)],
                      ring_s=3)
    caller, live = await floor.call()
    handoff_id = await floor.ask(live)
    assert await until(lambda: floor.held_by(handoff_id)) == floor.ada
    # Only Ada may take it while it is hers; her leg is staged in the call bridge.
    with pytest.raises(NotOfferable):
        await floor.live.control.accept(handoff_id, floor.bob)
    # Her leg is staged just after the offer is written: on a loaded box, a moment later.
    await until(lambda: list(live.staged) == [floor.ada], 2, why=lambda: str(live.staged))

    async def held_by_bob() -> bool:
        return await floor.held_by(handoff_id) == floor.bob

    await until(held_by_bob, 10)  # Ada's ring window passed: a no-answer, then Bob
    # Bob's leg is staged just after his offer is written, as Ada's was.
    await until(lambda: list(live.staged) == [floor.bob], 2, why=lambda: str(live.staged))
    await floor.live.control.accept(handoff_id, floor.bob)
    await until(lambda: live.party is Party.AGENT)
    async with floor.store.transaction() as tx:
        offers = [(o.agent_id, o.outcome) for o in await tx.queues.offers(
            (await tx.handoffs.get(handoff_id)).queue_id or 0)]
    assert offers == [(floor.ada, OfferOutcome.NO_ANSWER), (floor.bob, OfferOutcome.ACCEPTED)]
    await floor.end(caller, live)


async def test_a_member_who_misses_the_limit_in_a_row_is_set_away_with_an_audit_line(
    floor: Floor,
) -> None:
    queue = await floor.queue(Strategy.ROUND_ROBIN, [(floor.ada, 3), (floor.bob, 3)], limit=1)
    caller, live = await floor.call()
    handoff_id = await floor.ask(live)

    async def ada_away() -> bool:
        async with floor.store.transaction() as tx:
            return (await tx.agents.get(floor.ada)).presence is Presence.AWAY

    await until(ada_away, 5)
    assert await until(lambda: floor.held_by(handoff_id)) == floor.bob
    async with floor.store.transaction() as tx:
        [line] = [e for e in await tx.audit.recent() if e.detail.get("event") == "missed_offers"]
    assert (line.actor, line.subject) == ("controller", f"agent:{floor.ada}")
    assert (line.detail["queue"], line.detail["presence"]) == (queue.name, "away")
    await floor.end(caller, live)


async def _had_a_call(floor: Floor, agent_id: int, ended_at: datetime) -> None:
    """A call the agent took and finished at `ended_at` (what longest-idle reads)."""
    async with floor.store.transaction() as tx:
        call = await tx.calls.create(caller_number="+3310", caller_channel_id=f"old-{agent_id}")
        await tx.calls.close(call.id, CallOutcome.COMPLETED_BY_AGENT, end_cause="test")
    async with floor.store.engine.begin() as connection:
        await connection.execute(insert(Handoff).values(
            call_id=call.id, state=HandoffState.COMPLETED, reason="caller_request",
            priority=0, requested_at=ended_at, accepted_by=agent_id, accepted_at=ended_at,
            ended_at=ended_at, attempt=1, version=1))


@pytest.mark.parametrize(("strategy", "levels", "chosen"), [
    # Bob's last call ended longest ago; Ada's recently; Cyd never had one.
    (Strategy.LONGEST_IDLE, (5, 3, 1), "cyd"),
    # Bob and Cyd share the highest level; Cyd never had a call, so is the longer idle.
    (Strategy.SKILLS_WEIGHTED, (2, 5, 5), "cyd"),
    (Strategy.SKILLS_WEIGHTED, (2, 5, 4), "bob"),
    (Strategy.ROUND_ROBIN, (1, 1, 1), "ada"),
])
async def test_each_assigning_strategy_gives_the_card_to_its_member(
    floor: Floor, strategy: Strategy, levels: tuple[int, int, int], chosen: str,
) -> None:
    await _had_a_call(floor, floor.ada, T0)
    await _had_a_call(floor, floor.bob, T0 - timedelta(days=1))
    await floor.queue(strategy, list(zip((floor.ada, floor.bob, floor.cyd), levels,
                                         strict=True)))
    caller, live = await floor.call()
    handoff_id = await floor.ask(live)
    assert await until(lambda: floor.held_by(handoff_id)) == getattr(floor, chosen)
    await floor.end(caller, live)


async def test_the_maximum_wait_sends_the_caller_to_the_assistants_fallback(
    floor: Floor,
) -> None:
    # Ada is the only member, in wrap-up: coming back, so the caller waits for her...
    await floor.queue(Strategy.LONGEST_IDLE, [(floor.ada, 3)], max_wait_s=1)
    async with floor.store.transaction() as tx:
        await tx.agents.set_presence(floor.ada, Presence.WRAP_UP)
    caller, live = await floor.call()
    handoff_id = await floor.ask(live)
    assert (await floor.handoff(handoff_id)).state is HandoffState.OFFERED

    async def timed_out() -> bool:
        return (await floor.handoff(handoff_id)).state is HandoffState.TIMED_OUT

    # ...up to the queue's maximum, then the assistant's fallback: the AI keeps the
    # caller and a call-back is noted.
    await until(timed_out, 5)
    async with floor.store.transaction() as tx:
        notes = await tx.notes.for_call(live.call_id)
    assert any(n.text.startswith(CALLBACK_NOTE) for n in notes)
    await floor.end(caller, live)


async def test_a_queue_with_no_member_who_can_come_falls_back_at_once(floor: Floor) -> None:
    await floor.queue(Strategy.ROUND_ROBIN, [(floor.ada, 3)])
    async with floor.store.transaction() as tx:
        await tx.agents.set_presence(floor.ada, Presence.AWAY)
    caller, live = await floor.call()
    handoff_id = await floor.ask(live)

    async def failed() -> bool:
        return (await floor.handoff(handoff_id)).state is HandoffState.FAILED

    await until(failed)
    await floor.end(caller, live)


async def test_an_emergency_waiting_in_the_queue_gets_the_next_free_member_first(
    floor: Floor,
) -> None:
    await floor.queue(Strategy.ROUND_ROBIN, [(floor.ada, 3)], ring_s=30)
    async with floor.store.transaction() as tx:
        await tx.agents.set_presence(floor.ada, Presence.WRAP_UP)
    first_caller, first = await floor.call()
    normal = await floor.ask(first)
    second_caller, second = await floor.call()
    emergency = await floor.ask(second, priority="emergency")
    async with floor.store.transaction() as tx:
        await tx.agents.set_presence(floor.ada, Presence.AVAILABLE)
    assert await until(lambda: floor.held_by(emergency)) == floor.ada
    assert await floor.held_by(normal) is None
    await floor.end(second_caller, second)
    # The emergency's caller left: Ada is free for the one who waited longer.
    assert await until(lambda: floor.held_by(normal)) == floor.ada
    await floor.end(first_caller, first)


async def test_an_offer_all_queue_shows_its_card_to_its_members_only(floor: Floor) -> None:
    await floor.queue(Strategy.OFFER_ALL, [(floor.bob, 3), (floor.cyd, 3)])
    caller, live = await floor.call()
    handoff_id = await floor.ask(live)
    assert sorted(live.staged) == [floor.bob, floor.cyd]  # members' legs, not Ada's
    with pytest.raises(NotOfferable, match="members of queue"):
        await floor.live.control.accept(handoff_id, floor.ada)
    await floor.live.control.accept(handoff_id, floor.cyd)
    await until(lambda: live.party is Party.AGENT)
    await floor.end(caller, live)


async def test_a_topic_goes_to_its_queue_before_the_assistants_default_queue(
    floor: Floor,
) -> None:
    await floor.queue(Strategy.ROUND_ROBIN, [(floor.ada, 3)])
    billing = await floor.queue(Strategy.ROUND_ROBIN, [(floor.cyd, 3)], topics=("billing",),
                                default=False)
    caller, live = await floor.call()
    handoff_id = await floor.ask(live, topic="billing")
    assert (await floor.handoff(handoff_id)).queue_id == billing.id
    assert await until(lambda: floor.held_by(handoff_id)) == floor.cyd
    await floor.end(caller, live)


async def test_a_transfer_to_a_queue_goes_to_its_member_and_the_figures_are_kept(
    floor: Floor,
) -> None:
    caller, live = await floor.call()
    first = await floor.ask(live)  # no queue yet: every available agent
    await floor.live.control.accept(first, floor.ada)
    await until(lambda: live.party is Party.AGENT)
    queue = await floor.queue(Strategy.ROUND_ROBIN, [(floor.ada, 3), (floor.bob, 3)],
                              default=False)
    transfer = await floor.live.control.transfer_to_queue(live.call_id, floor.ada, queue.id,
                                                          "VIP")
    # Ada is on the call, so the queue's card goes to Bob.
    assert await until(lambda: floor.held_by(transfer)) == floor.bob
    await floor.live.control.accept(transfer, floor.bob)
    await until(lambda: live.agent_id == floor.bob and live.transfer is None)
    async with floor.store.transaction() as tx:
        stats = await tx.queues.stats(queue.id)
    assert (stats.entered, stats.answered, stats.within_service_level, stats.no_answers) == (
        1, 1, 1, 0)
    assert stats.service_level == 1.0
    await floor.end(caller, live)
