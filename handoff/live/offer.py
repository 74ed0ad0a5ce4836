"""A handoff on offer: the card, the likely agents' legs staged in the call bridge, the
offer's timeout, and the assistant's fallback when nobody takes the call (its outside
number over the trunk, or a callback request is noted while the AI keeps the caller or
the caller leaves a voicemail)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from handoff.assistants import FallbackKind, accept_timeout_s
from handoff.calls import CallEvent, CallState
from handoff.events import (
    CARDS_TOPIC,
    Fallback,
    HandoffFailed,
    Offered,
    Withdrawn,
    assistant_topic,
)
from handoff.handoffs import (
    FailureReason,
    HandoffEvent,
    HandoffState,
    handoff_priority,
    reoffer_level,
)
from handoff.live.call import LiveCall
from handoff.live.errors import CallStateConflict, OutOfHours
from handoff.live.flow import Flow
from handoff.live.legs import add_when_in_stasis, hang_up
from handoff.store import Transaction
from handoff.store.models import Assistant, Handoff, QueueRecord
from handoff.trunks import OutboundRefused
from pbx.ari import AriError

log = logging.getLogger(__name__)

CALLBACK_NOTE = "Callback requested:"
# Why a call-back is noted for a call that came out of hours: also how a restarted
# controller knows that fallback applied already (handoff.live.reconcile).
OUT_OF_HOURS = "called out of hours"
_DIALABLE = re.compile(r"^\+?[0-9]{2,20}$")
_ON_OFFER = frozenset({HandoffState.REQUESTED, HandoffState.OFFERED})


def callback_note(why: str) -> str:
    return f"{CALLBACK_NOTE} {why}."


class Offers(Flow):
    async def request(
        self,
        call_id: str,
        *,
        reason: str,
        summary: str,
        topic: str | None = None,
        priority: str = "normal",
        attempt: int = 1,
        queue_id: int | None = None,
    ) -> int:
        """Open a handoff and offer it; the caller keeps the AI meanwhile. ``queue_id``:
        that queue's (the caller chose it in a menu), not the topic's or assistant's.

        Out of the assistant's business hours no card is opened: nobody is there to take
        it. Its fallback applies instead (already, if the call came out of hours), and
        OutOfHours says so to whoever asked.
        """
        live = self.ctl.live(call_id)
        if live.voicemail:
            # The fallback has the caller: a card now would cut their message short.
            raise CallStateConflict(call_id, CallState.WITH_AI,
                                    "the caller is leaving a voicemail")
        # Read once for the card: its hours now, its queue and accept timeout below, and
        # what the caller is told when a person takes it (handoff.live.announce).
        async with self.store.transaction() as tx:
            assistant = await tx.assistants.by_name(live.assistant)
        live.announcements = dict(assistant.announcements or {}) if assistant else {}
        if assistant is not None and not self.ctl.engines.open_now(assistant):
            log.info("call=%s: a person asked for out of %s's hours: its fallback instead",
                     call_id, assistant.name)
            if not await self.out_of_hours(live, assistant) and live.ai is None \
                    and live.forward is None and not live.ending:
                # Applied before, and the AI has failed since: nobody is left to keep
                # the caller company (the call-back is noted already).
                self.ctl.spawn(self.ctl.ai.apologise_and_end(live),
                               f"apology call={live.call_id}")
            raise OutOfHours(call_id, assistant.name)
        async with live.lock:
            async with self.store.transaction() as tx:
                call = await tx.calls.get(call_id)
                if call.state not in (CallState.WITH_AI, CallState.HANDOFF_PENDING):
                    raise CallStateConflict(call_id, call.state, "a handoff cannot start")
                # One card per caller: two asks that raced (the engine's, and the policy's
                # on the caller's words) must not put the caller on the desks twice.
                if any(h.state in _ON_OFFER for h in await tx.handoffs.open_for_call(call_id)):
                    raise CallStateConflict(call_id, call.state, "a handoff is already open")
                queue = (await tx.queues.get(queue_id) if queue_id is not None
                         else await tx.queues.route(assistant, topic))
                handoff = await tx.handoffs.request(
                    call_id, reason=reason, summary=summary, topic=topic,
                    priority=handoff_priority(priority, attempt), attempt=attempt,
                    queue_id=queue.id if queue else None,
                )
                if call.state is CallState.WITH_AI:
                    await tx.calls.apply(call_id, CallEvent.REQUEST_HANDOFF)
                handoff = await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)
                if queue is None:
                    likely = [a.id for a in await tx.agents.available()]
                    nobody = not likely
                elif not self.ctl.engines.open_now(queue):
                    # Out of the queue's hours nobody is there to come: the fallback now.
                    log.info("call=%s: queue %s is out of its hours", call_id, queue.name)
                    likely, nobody = [], True
                else:
                    # A queue's caller waits while a member is free or will be soon.
                    nobody = not await tx.queues.reachable_members(queue.id)
                    likely = [] if queue.strategy.assigns else [
                        c.agent_id for c in await tx.queues.candidates(queue.id, handoff.id)]
                    if not nobody and not queue.strategy.assigns:
                        await tx.queues.offer(handoff, None)  # to every member
            live.handoff_id = handoff.id
            if not nobody:
                await self.stage(live, likely)
        if nobody:
            # Nobody is on duty: no card would ever be taken, so fall back right away.
            self.ctl.spawn(self.give_up(live, handoff.id, FailureReason.NO_AGENTS),
                           "no agents")
            return handoff.id
        self.keep_offering(live, handoff, queue, accept_timeout_s(assistant))
        return handoff.id

    def keep_offering(self, live: LiveCall, handoff: Handoff, queue: QueueRecord | None,
                      accept_timeout: float, waited_s: float = 0.0) -> None:
        """The card on offer until taken or until the caller has waited long enough: the
        queue's maximum wait (the assistant's accept timeout without a queue), of which
        `waited_s` already passed (a restarted controller picking the card up)."""
        if queue is not None and queue.strategy.assigns:
            self.ctl.queues.watch(
                live, handoff.id, queue.id, max(0.0, queue.max_wait_s - waited_s),
                lambda: self.give_up(live, handoff.id, FailureReason.TIMEOUT))
            return
        self.hub.publish(CARDS_TOPIC, Offered(live.call_id, handoff.id))
        wait = queue.max_wait_s if queue is not None else accept_timeout
        self.time_out(live, handoff.id, max(0.0, wait - waited_s))

    async def stage(self, live: LiveCall, agent_ids: list[int]) -> None:
        """Create the likely agents' legs now, undialled, and put them in the call bridge
        (lock held).

        Creating a leg and bridging it are two ARI round trips that would otherwise sit
        between the Accept click and the agent's phone ringing. An undialled channel is
        silent and rings nobody; the losers' legs are hung up after the accept.

        An agent with a parked open line needs no leg: the line itself is staged, muted
        both ways (handoff.live.lines), so that Accept is an unmute rather than a move;
        the losers' lines go back to their holding bridges.
        """
        likely = agent_ids[: self.timing.staged_agents]
        for agent_id in likely:
            if not live.ending:
                await self.ctl.lines.stage(agent_id, live.bridge)
        # Told apart before the store is asked, so a card offered to open lines reads
        # nobody (a line staged for another call moves in when taken, as a parked one).
        wanted = [agent_id for agent_id in likely
                  if agent_id not in live.staged and not self.ctl.lines.idle(agent_id)]
        if not wanted or live.ending:
            return
        async with self.store.transaction() as tx:
            candidates = await tx.agents.of_ids(wanted)
        for agent in candidates:
            if agent.id in live.staged or live.ending or self.ctl.lines.idle(agent.id) \
                    or self.ctl.moves.endpoint(agent) != agent.sip_user:
                continue  # (one whose line another node holds is reached through it)
            try:
                leg = await self.ctl.moves.create_agent_leg(live, agent.sip_user)
            except AriError as exc:
                log.warning("call=%s: could not stage a leg for agent %s: %s",
                            live.call_id, agent.id, exc)
                continue
            live.staged[agent.id] = leg

    async def unstage(self, live: LiveCall, agent_ids: list[int] | None = None) -> None:
        """Hang up the staged legs and park the staged lines (of `agent_ids` only: a
        queue's card moved on)."""
        for agent_id, leg in list(live.staged.items()):
            if agent_ids is None or agent_id in agent_ids:
                del live.staged[agent_id]
                await hang_up(self.ari, leg)
        await self.ctl.lines.unstage(live.bridge, agent_ids)

    def time_out(self, live: LiveCall, handoff_id: int, after_s: float) -> None:
        """The card is withdrawn and the fallback applies after `after_s`, unless taken."""
        self.stop_timeout(live)
        live.offer_timeout = self.ctl.spawn(self._offer_timeout(live, handoff_id, after_s),
                                            f"offer timeout {handoff_id}")

    @staticmethod
    def stop_timeout(live: LiveCall) -> None:
        """The call's card was taken, or the caller left: its timeout has nothing left to
        do (and would hold the call until it fired)."""
        task, live.offer_timeout = live.offer_timeout, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _offer_timeout(self, live: LiveCall, handoff_id: int, timeout: float) -> None:
        await asyncio.sleep(timeout)
        await self.give_up(live, handoff_id, FailureReason.TIMEOUT)

    async def give_up(self, live: LiveCall, handoff_id: int, reason: FailureReason) -> None:
        """Nobody took the call: the assistant's fallback applies.

        Either a number over the trunk (the caller is bridged to it; the AI leaves when
        it answers) or the AI keeps the caller and a callback request is recorded.
        """
        why = f"nobody could take the call ({reason.value})"
        async with live.lock:
            # A card that is no longer the call's (taken and handed back, withdrawn) has
            # nothing left to time out: known here, without asking the store.
            if live.ending or live.handoff_id != handoff_id:
                return
            async with self.store.transaction() as tx:
                handoff = await tx.handoffs.get(handoff_id)
                if handoff.state is not HandoffState.OFFERED:
                    return
                if reason is FailureReason.TIMEOUT:
                    await tx.handoffs.apply(handoff_id, HandoffEvent.TIME_OUT,
                                            seen=handoff.state)
                else:
                    await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL, failure_reason=reason,
                                            seen=handoff.state)
                await tx.calls.apply(live.call_id, CallEvent.HANDOFF_FAILED)
                assistant = await tx.assistants.by_name(live.assistant)
                number = assistant.fallback_number if assistant else None
                kind = assistant.fallback_kind if assistant else FallbackKind.AI_CALLBACK
                to_number = bool(number) and kind is FallbackKind.NUMBER
                if not to_number:
                    # With the failure, in one transaction: a controller killed between
                    # the two would leave a failed handoff and no callback request.
                    await self._note_callback(tx, live, why)
            live.handoff_id = None
            await self.unstage(live)
            forwarded = await self._fall_back(live, str(number) if to_number else None,
                                              why, noted=not to_number,
                                              voicemail=kind is FallbackKind.VOICEMAIL)
        self.hub.publish(CARDS_TOPIC, Withdrawn(handoff_id, reason))
        self.hub.publish(
            assistant_topic(live.assistant),
            HandoffFailed(live.call_id, reason,
                          Fallback.NUMBER if forwarded else Fallback.VOICEMAIL
                          if live.voicemail else Fallback.CALLBACK),
        )

    async def out_of_hours(self, live: LiveCall, assistant: Assistant) -> bool:
        """The call came outside the assistant's business hours: its fallback applies at
        once, with no card (nobody is there to take one). The AI keeps the caller company
        meanwhile, and told the engine in call_started, so it says so. False: it had
        applied already (or the call is ending)."""
        number = assistant.fallback_number
        to_number = bool(number) and assistant.fallback_kind is FallbackKind.NUMBER
        async with live.lock:
            # Once per call: a caller who asks for a person later in the same call (the
            # receptionist's 0) must not get a second call-back note or a second ring.
            if live.ending or live.out_of_hours:
                return False
            live.out_of_hours = True
            await self._fall_back(live, number if to_number else None,
                                  OUT_OF_HOURS, noted=False,
                                  voicemail=assistant.fallback_kind is FallbackKind.VOICEMAIL)
            return True

    async def _fall_back(self, live: LiveCall, number: str | None, why: str, *,
                         noted: bool, voicemail: bool = False) -> bool:
        """The fallback itself, under the call's lock: ring ``number`` (the caller is
        bridged to it; the AI leaves when it answers), or, without one or when it cannot
        be dialled, a callback request is noted (unless ``noted`` already) while the AI
        keeps the caller, or the caller leaves a ``voicemail``. True: the number rings."""
        if number and await self._forward(live, number):
            return True
        live.callback_requested = True
        if not noted:
            async with self.store.transaction() as tx:
                await self._note_callback(tx, live, why)
        if voicemail:
            await self.ctl.voicemail.take(live)
            return False
        if live.ai is None:
            # The AI failed earlier: nobody is left to keep the caller company.
            self.ctl.spawn(self.ctl.ai.apologise_and_end(live), f"apology call={live.call_id}")
        return False

    @staticmethod
    async def _note_callback(tx: Transaction, live: LiveCall, why: str) -> None:
        await tx.notes.add(callback_note(why),
                           call_id=live.call_id, contact_number=live.caller_number or None)

    async def reoffer(self, live: LiveCall, previous: int | None) -> None:
        """The attempt `previous` failed (the agent's leg): offer the call again, one step
        more urgent."""
        if live.ending or previous is None:
            return
        async with self.store.transaction() as tx:
            old = await tx.handoffs.get(previous)
            if live.handoff_id == previous:
                live.handoff_id = None
        # Closed since: the caller has the AI and the assistant's fallback instead.
        with contextlib.suppress(OutOfHours):
            await self.request(
                live.call_id, reason=old.reason, summary=old.summary or "", topic=old.topic,
                priority=reoffer_level(old.priority), attempt=old.attempt + 1,
            )

    # ---- the fallback number -------------------------------------------------------------

    async def _forward(self, live: LiveCall, number: str) -> bool:
        """Ring the fallback number over the first trunk that allows it, bridged early
        like an agent leg.

        The number comes from the assistant's settings, never from the caller, and is
        checked to be a plain number so it cannot smuggle a second dial string; a number
        no trunk allows is not dialled (the caller stays with the AI, a callback is
        requested).
        """
        if not _DIALABLE.match(number):
            log.error("call=%s: fallback %r is not a dialable number", live.call_id, number)
            return False
        try:
            trunk = await self.ctl.outbound.route(
                number, purpose="fallback_number", actor=f"assistant:{live.assistant}",
                call_id=live.call_id)
        except OutboundRefused:
            return False  # logged and audited; the caller stays with the AI
        leg = live.new_leg_id("forward")
        try:
            await self.ari.channels.create(
                f"PJSIP/{number}@{trunk.name}", self.ctl.app,
                app_args=["forward", live.call_id], channel_id=leg, originator=live.caller,
            )
            await add_when_in_stasis(self.ari, live.bridge, leg)
            await self.ari.channels.dial(leg, caller=live.caller,
                                         timeout=self.timing.ring_timeout_s)
        except AriError as exc:
            log.warning("call=%s: fallback number could not be dialled: %s", live.call_id, exc)
            await hang_up(self.ari, leg)
            return False
        live.forward = leg
        return True

    async def forward_answered(self, live: LiveCall) -> None:
        async with live.lock:
            picked_up = live.forward_picked_up()
        if picked_up:
            self.ctl.spawn(self._complete_forward(live), f"forward call={live.call_id}")

    async def _complete_forward(self, live: LiveCall) -> None:
        await self.ctl.media.until_heard(live.forward)
        async with live.lock:
            if live.closed or live.caller_leaving:
                return
            await self.ctl.ai.leave(live)
            async with self.store.transaction() as tx:
                await tx.calls.apply(live.call_id, CallEvent.FORWARD, ai_channel_id=None)
        log.info("call=%s forwarded to the fallback number", live.call_id)

    async def forward_gone(self, live: LiveCall) -> None:
        """The fallback number's leg ended: after talking, the call is over; unanswered,
        the caller stays with the AI and a callback request is noted."""
        live.forward = None
        if live.forward_answered:
            # The fallback party hung up: the call is over for the caller too.
            await self.ctl.end_call(live.call_id)
            return
        live.callback_requested = True
        if live.ai is None and not live.ending:
            # Nobody answered the fallback, and the AI had failed before.
            self.ctl.spawn(self.ctl.ai.apologise_and_end(live), f"apology call={live.call_id}")
