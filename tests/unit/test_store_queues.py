"""Queues in the store, on SQLite and PostgreSQL: who may accept a queued card (the
accept's own guard), an offer to one member moved on after its window, misses in a row
ended by an accept, the candidates a strategy chooses from, and the figures."""

from __future__ import annotations

import pytest

from handoff.handoffs import HandoffEvent, HandoffState
from handoff.queues import OfferOutcome, Strategy
from handoff.store import NotOfferable, Store
from handoff.store.models import Handoff, QueueRecord
from tests.store_fixtures import FakeClock
from tests.unit.test_store import new_agents, new_call


async def _queue(store: Store, strategy: Strategy, members: list[int]) -> QueueRecord:
    async with store.transaction() as tx:
        queue = await tx.queues.create(name=f"q-{strategy.value}", strategy=strategy,
                                       ring_s=10, max_wait_s=60, service_level_s=20,
                                       no_answer_limit=2)
        await tx.queues.set_members(queue.id, [(agent_id, 3) for agent_id in members])
    return queue


async def _queued(store: Store, queue: QueueRecord) -> Handoff:
    call = await new_call(store)
    async with store.transaction() as tx:
        handoff = await tx.handoffs.request(call.id, reason="caller_request",
                                            queue_id=queue.id)
        return await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)


async def test_an_offer_all_card_is_for_its_members_and_its_offer_ends_accepted(
    store: Store,
) -> None:
    outsider, member = await new_agents(store, 2)
    queue = await _queue(store, Strategy.OFFER_ALL, [member.id])
    handoff = await _queued(store, queue)
    async with store.transaction() as tx:
        await tx.queues.offer(handoff, None)
    with pytest.raises(NotOfferable, match=f"members of queue {queue.name}"):
        async with store.transaction() as tx:
            await tx.handoffs.accept(handoff.id, outsider.id)
    async with store.transaction() as tx:
        won = await tx.handoffs.accept(handoff.id, member.id)
        [offer] = await tx.queues.offers(queue.id)
    assert won.state is HandoffState.ACCEPTED
    assert (offer.agent_id, offer.outcome) == (None, OfferOutcome.ACCEPTED)


async def test_an_assigned_card_moves_on_and_misses_in_a_row_reach_the_limit(
    store: Store, clock: FakeClock,
) -> None:
    ada, bob = await new_agents(store, 2)
    queue = await _queue(store, Strategy.ROUND_ROBIN, [ada.id, bob.id])
    first, second = await _queued(store, queue), await _queued(store, queue)
    async with store.transaction() as tx:
        assert [c.agent_id for c in await tx.queues.candidates(queue.id, first.id)] == [
            ada.id, bob.id]
        offer = await tx.queues.offer(first, ada.id)
        assert offer is not None
        # Ada holds a card: she is nobody's candidate until it leaves her.
        assert [c.agent_id for c in await tx.queues.candidates(queue.id, second.id)] == [
            bob.id]
        assert [h.id for h in await tx.queues.waiting(queue.id)] == [second.id]
    with pytest.raises(NotOfferable, match=f"agent {ada.id} only"):
        async with store.transaction() as tx:
            await tx.handoffs.accept(first.id, bob.id)
    clock.advance(10)
    async with store.transaction() as tx:
        missed = await tx.queues.missed(offer.id, queue.no_answer_limit)
        assert missed is not None and missed[1] is False  # one miss; the limit is two
        assert await tx.queues.last_position(queue.id) == 0
        tries = {c.agent_id: c.tries for c in await tx.queues.candidates(queue.id, first.id)}
        again = await tx.queues.offer(first, ada.id)
    assert tries == {ada.id: 1, bob.id: 0}
    assert again is not None
    async with store.transaction() as tx:
        missed = await tx.queues.missed(again.id, queue.no_answer_limit)
    assert missed is not None and missed[1] is True  # the second in a row
    async with store.transaction() as tx:
        # The run that set her away is over: the next one starts from nothing.
        assert await tx.queues.misses_in_a_row(ada.id) == 0
        await tx.queues.offer(first, bob.id)
        await tx.handoffs.accept(first.id, bob.id)
        await tx.handoffs.apply(second.id, HandoffEvent.CALLER_HUNG_UP)
        stats = await tx.queues.stats(queue.id)
    assert (stats.entered, stats.answered, stats.within_service_level, stats.not_answered,
            stats.no_answers, stats.waiting) == (2, 1, 1, 1, 2, 0)
    assert stats.service_level == 0.5


async def test_todays_figures_leave_out_the_cards_queued_before(
    store: Store, clock: FakeClock,
) -> None:
    [ada] = await new_agents(store, 1)
    queue = await _queue(store, Strategy.OFFER_ALL, [ada.id])
    yesterday = await _queued(store, queue)
    async with store.transaction() as tx:
        await tx.handoffs.apply(yesterday.id, HandoffEvent.CALLER_HUNG_UP)
    midnight = clock.advance(24 * 3600)
    clock.advance(60)
    today = await _queued(store, queue)
    async with store.transaction() as tx:
        await tx.queues.offer(today, None)
        clock.advance(5)
        await tx.handoffs.accept(today.id, ada.id)
        since_midnight = await tx.queues.stats(queue.id, since=midnight)
        ever = await tx.queues.stats(queue.id)
    # Today one card, taken in 5 s: a service level of 100 %; the abandoned one of
    # yesterday counts only over all time.
    assert (since_midnight.entered, since_midnight.answered,
            since_midnight.not_answered) == (1, 1, 0)
    assert since_midnight.service_level == 1.0
    assert (ever.entered, ever.not_answered, ever.service_level) == (2, 1, 0.5)
