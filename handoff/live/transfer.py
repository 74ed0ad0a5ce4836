"""An agent hands their caller on to a named colleague, or to a queue, with a note.

The first agent stays with the caller while the colleague's card is on offer and while
their phone rings: the caller is never left alone with hold music. The colleague's leg
rings in the same call bridge, so the switch is the first agent's leg leaving it.
"""

from __future__ import annotations

import asyncio
import logging

from handoff.assistants import Moment, accept_timeout_s
from handoff.calls import CallEvent, CallState
from handoff.events import CARDS_TOPIC, Offered, Taken, Withdrawn
from handoff.handoffs import FailureReason, HandoffEvent, HandoffState
from handoff.live.call import LiveCall, Transfer
from handoff.live.errors import (
    AgentNotAvailable,
    AgentUnreachable,
    CallStateConflict,
    QueueNotAvailable,
)
from handoff.live.flow import Flow
from handoff.live.move import unanswered
from handoff.store import NotFound, Transaction
from handoff.store.models import QueueRecord
from pbx.ari import AriError

log = logging.getLogger(__name__)


class Transfers(Flow):
    async def start(self, call_id: str, from_agent: int, to_agent: int | None, note: str,
                    *, to_queue: int | None = None) -> int:
        """Offer the call to one named colleague (a targeted card carrying `note`), or to
        a queue's members by its strategy; returns the new handoff's id."""
        live = self.ctl.live(call_id)
        await self.ctl.settled(live)
        async with live.lock:
            async with self.store.transaction() as tx:
                call = await tx.calls.get(call_id)
                if not live.connected or live.agent_id != from_agent \
                        or call.state is not CallState.WITH_AGENT:
                    raise CallStateConflict(call_id, call.state,
                                            f"agent {from_agent} is not talking to the caller")
                if live.transfer is not None:
                    raise CallStateConflict(call_id, call.state, "a transfer is already on offer")
                queue = None if to_queue is None else await self._queue(tx, to_queue)
                if queue is None and (to_agent is None or to_agent == from_agent or to_agent
                                      not in {a.id for a in await tx.agents.available()}):
                    raise AgentNotAvailable(to_agent or 0)
                current = await tx.handoffs.get(live.handoff_id) if live.handoff_id else None
                handoff = await tx.handoffs.request(
                    call_id, reason="transfer", note=note or None,
                    target_agent_id=None if queue else to_agent,
                    summary=current.summary if current else None,
                    topic=current.topic if current else None,
                    priority=current.priority if current else 0,
                    queue_id=queue.id if queue else None,
                )
                handoff = await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)
                if queue is not None and not queue.strategy.assigns:
                    await tx.queues.offer(handoff, None)
                assistant = await tx.assistants.by_name(live.assistant)
            live.transfer = Transfer(handoff.id, None if queue else to_agent)
        if queue is not None and queue.strategy.assigns:
            # The first agent is busy (on this call): the queue never offers it to them.
            self.ctl.queues.watch(live, handoff.id, queue.id, queue.max_wait_s,
                                  lambda: self._time_out(live, handoff.id, 0.0))
        else:
            timeout = queue.max_wait_s if queue else accept_timeout_s(assistant)
            self.hub.publish(CARDS_TOPIC, Offered(call_id, handoff.id))
            self.ctl.spawn(self._time_out(live, handoff.id, timeout),
                           f"transfer timeout {handoff.id}")
        self.ctl.call_changed(call_id)
        log.info("call=%s: agent %s transfers to %s (handoff %s)", call_id, from_agent,
                 f"queue {queue.name}" if queue else f"agent {to_agent}", handoff.id)
        return handoff.id

    @staticmethod
    async def _queue(tx: Transaction, queue_id: int) -> QueueRecord:
        """The queue a transfer goes to, if it can take the caller now or soon."""
        try:
            queue = await tx.queues.get(queue_id)
        except NotFound:
            raise QueueNotAvailable(str(queue_id), "no such queue") from None
        if queue.removed_at is not None:
            raise QueueNotAvailable(queue.name, "removed")
        if not await tx.queues.reachable_members(queue.id):
            raise QueueNotAvailable(queue.name, "none of its members is on duty and present")
        return queue

    async def accept(self, live: LiveCall, handoff_id: int, agent_id: int) -> None:
        async with live.lock:
            transfer = live.transfer
            async with self.store.transaction() as tx:
                # The store judges the race (taken, withdrawn, someone else's card).
                await tx.handoffs.accept(handoff_id, agent_id)
                if transfer is None or transfer.handoff_id != handoff_id or live.ending:
                    raise CallStateConflict(live.call_id, CallState.WITH_AGENT,
                                            "the transfer was cancelled")
                agent = await tx.agents.get(agent_id)
                line = self.ctl.lines.take(agent_id)
                try:
                    if line is not None:
                        # The colleague's open line joins the call bridge: already up,
                        # so the switch completes at once (see complete).
                        await self.ctl.lines.join(live.bridge, line)
                        leg = line
                    else:
                        leg = await self._ring(live, agent_id,
                                               self.ctl.moves.endpoint(agent))
                except AriError as exc:
                    if line is not None:
                        self.ctl.lines.put_back(line)
                    raise AgentUnreachable(agent_id, str(exc)) from exc
                transfer.leg, transfer.to_agent = leg, agent_id
                await tx.handoffs.apply(handoff_id, HandoffEvent.DIAL_AGENT,
                                        agent_channel_id=leg)
        if line is not None:
            self.ctl.spawn(self.complete(live), f"transfer call={live.call_id}")
        self.hub.publish(CARDS_TOPIC, Taken(handoff_id, agent_id))
        self.ctl.call_changed(live.call_id)

    async def won_elsewhere(self, live: LiveCall, handoff_id: int, agent_id: int,
                            endpoint: str) -> None:
        """The colleague won the transfer's card on another node's desk (that node judged
        the race and said so: handoff.live.xnode): their leg rings here as on an accept
        here, dialling ``endpoint`` (that node, on its trunk, for their line or phone)."""
        async with live.lock:
            transfer = live.transfer
            if transfer is None or transfer.handoff_id != handoff_id or transfer.leg \
                    or live.ending:
                # Cancelled meanwhile (the first agent left, the caller hung up): the
                # card's end was written then; the colleague is free again.
                log.info("call=%s: transfer %s won elsewhere after it was called off",
                         live.call_id, handoff_id)
                return
            try:
                leg = await self._ring(live, agent_id, endpoint)
            except AriError as exc:
                log.warning("call=%s: transfer %s to agent %s could not ring: %s",
                            live.call_id, handoff_id, agent_id, exc)
                live.transfer = None
                async with self.store.transaction() as tx:
                    await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.AGENT_LEG_FAILED)
                self.ctl.call_changed(live.call_id)
                return  # the first agent keeps the caller, as when a phone does not answer
            transfer.leg, transfer.to_agent = leg, agent_id
            async with self.store.transaction() as tx:
                await tx.handoffs.apply(handoff_id, HandoffEvent.DIAL_AGENT,
                                        agent_channel_id=leg)
        self.ctl.call_changed(live.call_id)

    async def _ring(self, live: LiveCall, agent_id: int, endpoint: str) -> str:
        """The colleague's leg, new in the call bridge and ringing (lock held)."""
        leg = await self.ctl.moves.create_agent_leg(live, endpoint)
        await self.ctl.moves.dial_agent(live, leg, agent_id)
        return leg

    async def complete(self, live: LiveCall) -> None:
        """The colleague answered: their leg takes the call, the first agent's leaves
        (once the colleague's voice flows: both agents are heard for a moment, never
        neither)."""
        media_at = None
        if live.transfer is not None and live.transfer.leg is not None:
            media_at = await self.ctl.media.until_media_from(live.transfer.leg)
        async with live.lock:
            transfer = live.transfer
            if transfer is None or transfer.leg is None or live.closed or live.caller_leaving:
                return
            live.transfer = None
            old_leg, old_handoff = live.agent, live.handoff_id
            self.ctl.wrap_up(live.agent_id)
            live.transferred(transfer)
            async with self.store.transaction() as tx:
                if old_handoff is not None:
                    await tx.handoffs.apply(old_handoff, HandoffEvent.END)
                await tx.handoffs.apply(transfer.handoff_id, HandoffEvent.AGENT_ANSWERED,
                                        media_at=media_at)
                await tx.calls.apply(live.call_id, CallEvent.AGENT_CONNECTED,
                                     agent_channel_id=transfer.leg)
            # No longer live.agent, so its StasisEnd is not mistaken for a lost agent;
            # an open line goes back to its holding bridge.
            if old_leg:
                await self.ctl.lines.release(old_leg)
        # The colleague's panel fills, and the first agent's desk is free for cards.
        self.ctl.call_changed(live.call_id)
        self.ctl.announcements.say(live, Moment.TRANSFER)
        log.info("call=%s transferred to agent %s via %s", live.call_id, transfer.to_agent,
                 transfer.leg)

    async def failed(self, live: LiveCall, cause: int) -> None:
        """The colleague's phone did not answer: the first agent simply keeps the caller."""
        async with live.lock:
            transfer, live.transfer = live.transfer, None
            if transfer is None or live.ending:
                return
            async with self.store.transaction() as tx:
                await tx.handoffs.apply(transfer.handoff_id, HandoffEvent.FAIL,
                                        failure_reason=unanswered(cause))
        self.ctl.call_changed(live.call_id)
        log.info("call=%s: transfer %s failed (cause %s); the first agent keeps the call",
                 live.call_id, transfer.handoff_id, cause)

    async def _time_out(self, live: LiveCall, handoff_id: int, timeout: float) -> None:
        await asyncio.sleep(timeout)
        async with live.lock:
            transfer = live.transfer
            if transfer is None or transfer.handoff_id != handoff_id or transfer.leg:
                return
            async with self.store.transaction() as tx:
                if (await tx.handoffs.get(handoff_id)).state is not HandoffState.OFFERED:
                    return  # won on another node's desk, its leg not rung here yet
                live.transfer = None
                await tx.handoffs.apply(handoff_id, HandoffEvent.TIME_OUT)
        self.hub.publish(CARDS_TOPIC, Withdrawn(handoff_id, FailureReason.TIMEOUT))
        self.ctl.call_changed(live.call_id)

    async def cancel(self, live: LiveCall) -> None:
        """The first agent is leaving (back to the AI, or gone): a pending transfer of
        their call makes no sense any more (lock held)."""
        transfer, live.transfer = live.transfer, None
        if transfer is None:
            return
        if transfer.leg:
            await self.ctl.lines.release(transfer.leg)
        async with self.store.transaction() as tx:
            await tx.handoffs.apply(transfer.handoff_id, HandoffEvent.FAIL,
                                    failure_reason=FailureReason.CANCELLED)
        self.hub.publish(CARDS_TOPIC, Withdrawn(transfer.handoff_id, FailureReason.CANCELLED))
