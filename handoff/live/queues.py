"""Queued cards on live calls: a queue that assigns gives each card to one member at a
time, for its ring window, and moves on when it passes.

Each queued card has a watcher while it is on offer. It runs the queue's assignment
pass (the waiting cards of the queue, most urgent first, each to the member its
strategy chooses among those free), then waits for whichever comes first: the ring
window of the member holding the card, the caller's maximum wait, or news that may free
a member (an agent's presence, a card taken or withdrawn, a call changing hands). A
window that passes is a no-answer against the member, and a member who misses the
queue's limit in a row is set away (audited, as the phone watch does for a dead phone).

Who wins is decided by the database, as for every card: the member's Accept is a
conditional UPDATE on the card naming them, the move to the next member one naming
them too, so an Accept in the last millisecond of the window either wins or loses
whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from handoff.agents import CONTROLLER, PresenceEvent
from handoff.events import (
    AGENTS_TOPIC,
    CALLS_TOPIC,
    CARDS_TOPIC,
    MOVED_ON,
    AgentChanged,
    Offered,
    Withdrawn,
)
from handoff.handoffs import HandoffState
from handoff.live.call import LiveCall
from handoff.live.flow import Flow
from handoff.queues import choose
from handoff.store.models import QueueOffer
from handoff.store.transitions import utc_now

if TYPE_CHECKING:
    from handoff.live.control import CallControl

log = logging.getLogger(__name__)

# What the card does when the caller has waited the queue's maximum: the assistant's
# fallback for a call, the first agent keeping the caller for a transfer.
OnMaxWait = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Holding:
    """A member holding a queued card, and how long their window has left."""

    offer_id: int
    agent_id: int
    left_s: float


class Queues(Flow):
    def __init__(self, ctl: CallControl) -> None:
        super().__init__(ctl)
        # One assignment pass at a time in this process: two watchers of one queue must
        # not both give their member to different cards from the same picture.
        self._assigning = asyncio.Lock()

    def watch(self, live: LiveCall, handoff_id: int, queue_id: int, wait_s: float,
              on_max_wait: OnMaxWait) -> None:
        """Offer the queued card member by member until taken, gone, or `wait_s` passed."""
        self.ctl.spawn(self._watch(live, handoff_id, queue_id, wait_s, on_max_wait),
                       f"queue {queue_id} handoff {handoff_id}")

    async def _watch(self, live: LiveCall, handoff_id: int, queue_id: int, wait_s: float,
                     on_max_wait: OnMaxWait) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        async with self.hub.subscribe(AGENTS_TOPIC, CARDS_TOPIC, CALLS_TOPIC) as news:
            while not live.ending:
                await self.assign(queue_id)
                holding = await self._holding(handoff_id)
                if holding is None:
                    return  # taken, or gone (the caller hung up, a take-over)
                now = loop.time()
                if now >= deadline:
                    break
                if holding.agent_id and holding.left_s <= 0:
                    await self._missed(live, holding, queue_id)
                    continue
                pause = deadline - now
                pause = min(pause, holding.left_s) if holding.agent_id else min(
                    pause, self.timing.queue_poll_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(news.get(), pause)
        if not live.ending:
            log.info("call=%s: handoff %s waited the maximum in queue %s",
                     live.call_id, handoff_id, queue_id)
            await on_max_wait()

    async def _holding(self, handoff_id: int) -> _Holding | None:
        """Who holds the card now (agent 0: nobody yet); None once it is not on offer."""
        async with self.store.transaction() as tx:
            handoff = await tx.handoffs.get(handoff_id)
            if handoff.state is not HandoffState.OFFERED:
                return None
            offer = await tx.queues.open_offer(handoff_id)
            if offer is None or offer.agent_id is None:
                return _Holding(0, 0, 0.0)
            queue = await tx.queues.get(offer.queue_id)
        held_s = (utc_now() - offer.offered_at).total_seconds()
        return _Holding(offer.id, offer.agent_id, queue.ring_s - held_s)

    async def assign(self, queue_id: int) -> None:
        """Give the queue's waiting cards, most urgent first, each to the member its
        strategy chooses among the free ones; stop at the first card nobody can take
        (a less urgent one must not get the member a more urgent one is waiting for)."""
        given: list[tuple[str, int, int]] = []
        async with self._assigning, self.store.transaction() as tx:
            queue = await tx.queues.get(queue_id)
            if not queue.strategy.assigns:
                return
            members = len(await tx.queues.members(queue_id))
            for handoff in await tx.queues.waiting(queue_id):
                chosen = choose(queue.strategy,
                                await tx.queues.candidates(queue_id, handoff.id),
                                members=members,
                                last_position=await tx.queues.last_position(queue_id))
                if chosen is None:
                    break
                if await tx.queues.offer(handoff, chosen.agent_id) is not None:
                    given.append((handoff.call_id, handoff.id, chosen.agent_id))
        for call_id, handoff_id, agent_id in given:
            log.info("call=%s: queue %s offers handoff %s to agent %s",
                     call_id, queue_id, handoff_id, agent_id)
            live = self.ctl.calls.get(call_id)
            if live is not None and live.handoff_id == handoff_id:
                async with live.lock:
                    await self.ctl.offers.stage(live, [agent_id])
            self.hub.publish(CARDS_TOPIC, Offered(call_id, handoff_id))

    async def _missed(self, live: LiveCall, holding: _Holding, queue_id: int) -> None:
        """The member's ring window passed: the card leaves them, a no-answer is counted,
        and too many in a row set them away."""
        async with self.store.transaction() as tx:
            queue = await tx.queues.get(queue_id)
            missed = await tx.queues.missed(holding.offer_id, queue.no_answer_limit)
            away = None
            if missed is not None and missed[1]:
                away = await tx.agents.try_change_presence(
                    holding.agent_id, PresenceEvent.MISSED_OFFERS, actor=CONTROLLER,
                    why=f"missed {queue.no_answer_limit} offers in a row",
                    queue=queue.name, handoff=missed[0].handoff_id)
        if missed is None:
            return  # taken in the last moment
        offer: QueueOffer = missed[0]
        log.info("call=%s: agent %s let handoff %s pass (queue %s)%s", live.call_id,
                 holding.agent_id, offer.handoff_id, queue.name,
                 "; set away" if away else "")
        async with live.lock:
            await self.ctl.offers.unstage(live, [holding.agent_id])
        self.hub.publish(CARDS_TOPIC, Withdrawn(offer.handoff_id, MOVED_ON))
        if away is not None:
            self.hub.publish(AGENTS_TOPIC, AgentChanged(holding.agent_id))
