"""The move: an agent accepts, their leg rings in the call bridge, answers, and the AI
leaves once their voice flows; and the way back, when the agent hands the caller to the
AI or their leg is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from handoff.assistants import Moment
from handoff.calls import CallEvent, CallOutcome, CallState
from handoff.events import (
    CARDS_TOPIC,
    HandoffConnected,
    HandoffFailed,
    ReturnedToAi,
    Taken,
    assistant_topic,
)
from handoff.handoffs import FailureReason, HandoffEvent, HandoffState
from handoff.live.call import LiveCall, Party
from handoff.live.errors import AgentUnreachable, CallStateConflict
from handoff.live.flow import Flow
from handoff.live.legs import add_when_in_stasis, hang_up
from handoff.live.timeline import mark
from handoff.live.xnode import agent_endpoint
from handoff.store import Transaction
from handoff.store.models import Agent
from pbx.ari import AriError

log = logging.getLogger(__name__)

# Q.850 causes with which an agent leg ends before answering.
_NO_ANSWER = {18, 19}
_REJECTED = {17, 21}


def unanswered(cause: int) -> FailureReason:
    """Why an agent leg that ended before answering failed, from its Q.850 cause."""
    if cause in _NO_ANSWER:
        return FailureReason.AGENT_NO_ANSWER
    if cause in _REJECTED:
        return FailureReason.AGENT_REJECTED
    return FailureReason.AGENT_LEG_FAILED


class Moves(Flow):
    async def accept(self, handoff_id: int, agent_id: int) -> None:
        """The winning agent's leg rings as soon as the database says who won.

        Only one agent gets past ``tx.handoffs.accept`` (a conditional UPDATE); the
        others get :class:`AlreadyTaken`. The leg is usually staged already (created and
        in the call bridge since the offer), so winning costs one UPDATE and one dial:
        the agent's first RTP packet is mixed to the caller, never dropped while an
        addChannel is still in flight. The phone starts ringing before the transaction
        commits; a dial that fails rolls the accept back and the card stays on offer.
        An agent with an open line is not rung at all: their line moves into the call.
        """
        await self.ctl.lines.settled(agent_id)  # at once unless the line is just opening
        calls = self.ctl.calls.values()
        moving = next((c for c in calls
                       if c.transfer is not None and c.transfer.handoff_id == handoff_id), None)
        if moving is not None:
            await self.ctl.transfers.accept(moving, handoff_id, agent_id)
            return
        live = next((c for c in calls if c.handoff_id == handoff_id), None)
        if live is None:
            # Not a live call here: another node's (the agent is reached through a leg
            # between the nodes), or the store says why (taken, withdrawn).
            await self.ctl.xnode.accept(handoff_id, agent_id)
            return
        async with live.lock:
            mark("locked")
            async with self.store.transaction() as tx:
                handoff = await tx.handoffs.accept(handoff_id, agent_id)
                mark("won")
                line = self.ctl.lines.take(agent_id)
                if line is not None:
                    leg = await self.bring_line(live, line, agent_id)
                else:
                    leg = await self._ring(tx, live, agent_id)
                await tx.handoffs.apply(handoff.id, HandoffEvent.DIAL_AGENT,
                                        agent_channel_id=leg)
                # Known to the ledger while it rings, so a restarted controller finds it.
                await tx.calls.set_legs(live.call_id, agent_channel_id=leg)
            mark("committed")
            self.ctl.offers.stop_timeout(live)
            await self.ctl.offers.unstage(live)
        self.hub.publish(CARDS_TOPIC, Taken(handoff_id, agent_id))

    async def _ring(self, tx: Transaction, live: LiveCall, agent_id: int) -> str:
        """The ringing path: the agent's staged (or new) leg is dialled; in a cluster, an
        agent whose open line another node holds is reached through that node."""
        staged = live.staged.pop(agent_id, None)
        try:
            if staged is None or self.store.node:
                agent = await tx.agents.get(agent_id)
                endpoint = self.endpoint(agent)
                if staged is not None and endpoint != agent.sip_user:
                    await hang_up(self.ari, staged)  # it would ring a phone busy with a line
                    staged = None
                if staged is None:
                    staged = await self.create_agent_leg(live, endpoint)
            await self.dial_agent(live, staged, agent_id)
        except AriError as exc:
            raise AgentUnreachable(agent_id, str(exc)) from exc
        live.agent_ringing(staged, agent_id)
        return staged

    async def bring_line(self, live: LiveCall, line: str, agent_id: int) -> str:
        """The open-line path: the agent's line, up and idle, joins the call with no SIP,
        ICE or DTLS work while the caller waits (lock held, the accept's transaction
        open). Usually it is staged in the call's bridge already, muted both ways since
        the card was offered, and is only unmuted; else it moves in from its holding
        bridge (one addChannel: it departs that bridge and joins the call's).

        The line has been sending the agent's audio since the shift began, so there is
        no late first word to wait for (the overlap a rung phone gets): the AI steps out
        one mixing tick later (Timing.line_overlap_s), when the agent's first frame is
        in the mix, rather than leave the caller a hole before it. The ledger follows."""
        try:
            mark("ari_sent")
            # The line joins (or is unmuted) as Asterisk takes the request, before its
            # answer comes back: the tick the AI stays is counted from here.
            sent = time.monotonic()
            await self.ctl.lines.join(live.bridge, line)
            mark("ari_answered")
        except AriError as exc:
            self.ctl.lines.put_back(line)
            raise AgentUnreachable(agent_id, str(exc)) from exc
        live.agent_ringing(line, agent_id)
        if live.agent_picked_up():
            self.ctl.spawn(self._line_moved_in(live, self.store.now(), sent),
                           f"move call={live.call_id}")
        return line

    async def dial_agent(self, live: LiveCall, leg: str, agent_id: int) -> None:
        """Ring an agent leg that is already in the call bridge; a leg that cannot ring
        is hung up, so a failed accept leaves nothing behind in the bridge."""
        try:
            mark("ari_sent")
            await self.ari.channels.dial(leg, caller=live.caller,
                                         timeout=self.timing.ring_timeout_s)
            mark("ari_answered")
        except AriError as exc:
            log.warning("call=%s: agent %s's leg %s could not be dialled: %s",
                        live.call_id, agent_id, leg, exc)
            await hang_up(self.ari, leg)
            raise

    def endpoint(self, agent: Agent) -> str:
        """What an agent's leg dials (create_agent_leg): handoff.live.xnode's
        agent_endpoint from this node."""
        return agent_endpoint(agent, self.store.node)

    async def create_agent_leg(self, live: LiveCall, sip_user: str) -> str:
        """A new agent leg in the call bridge, not dialled yet (lock held)."""
        leg = live.new_leg_id("agent")
        try:
            await self.ari.channels.create(
                self.ctl.phones.dial(sip_user), self.ctl.app, app_args=["agent", live.call_id],
                channel_id=leg, originator=live.caller,
            )
            await add_when_in_stasis(self.ari, live.bridge, leg)
        except AriError:
            await hang_up(self.ari, leg)
            raise
        return leg

    async def agent_answered(self, live: LiveCall) -> None:
        """The agent's leg is up: the AI leaves shortly and the call is the agent's.

        The agent is already in the bridge (added before the dial), so their first words
        reach the caller at once; the AI steps out once the agent's audio flows. That
        runs as its own task, so this call's next events (the caller hanging up right
        now, say) are not queued behind the wait.
        """
        async with live.lock:
            if live.agent_picked_up():
                self.ctl.spawn(self._complete_move(live), f"move call={live.call_id}")

    async def _complete_move(self, live: LiveCall) -> None:
        try:
            media_at = await self.ctl.media.until_heard(live.agent)
            async with live.lock:
                if live.closed or live.caller_leaving or not live.agent_answered:
                    # The caller hung up as the agent answered: they never talked. The
                    # hang-up handler abandons the handoff and cleans up.
                    return
                await self.agent_connected(live, media_at)
        finally:
            live.move_settled.set()

    async def settled(self, live: LiveCall) -> None:
        """Wait out a move in progress (the agent answered, the AI is still leaving).

        An agent who clicks "return to AI" or a supervisor who takes over in those few
        tens of milliseconds gets their command carried out, not a refusal.
        """
        async with asyncio.timeout(
                self.timing.agent_media_wait_s + self.timing.ai_overlap_s + 5):
            await live.move_settled.wait()

    async def _line_moved_in(self, live: LiveCall, media_at: datetime, moved: float) -> None:
        """An open line one tick into the call's bridge: the AI leaves, then the ledger.

        Not under the call's lock, which the accept that moved the line holds until its
        transaction commits (on a busy box, well past a tick). Nothing else changes the
        call's parties meanwhile: commands wait for the move to settle, and a caller or
        a line gone in the tick has its handler's say (checked here, with no await in
        between, before the AI is sent away)."""
        tick = self.timing.line_overlap_s
        try:
            await asyncio.sleep(max(0.0, moved + tick - time.monotonic()))
            if live.closed or live.caller_leaving or live.party is not Party.AGENT_ANSWERED:
                return
            live.agent_connected()
            await self.ctl.ai.leave(live)
            mark("ai_left")
            stayed = time.monotonic() - moved
            if stayed > 2 * tick:
                # A starved event loop (or PBX) wakes and sends the AI away late: the
                # caller heard it over the agent that long. Said, as a handler over its
                # budget is: the box is too busy for the move it was asked.
                log.warning("call=%s: the AI left the call's bridge %.0f ms after the "
                            "agent's line joined it, not one mixing tick", live.call_id,
                            stayed * 1000)
            await self._line_connected(live, media_at)
        finally:
            live.move_settled.set()

    async def _line_connected(self, live: LiveCall, media_at: datetime) -> None:
        """An open line's move, in the ledger (its AI has left)."""
        try:
            async with live.lock:
                if live.closed or live.caller_leaving or not live.connected:
                    # The caller hung up, or the line dropped, as it moved in: their
                    # handlers closed the handoff.
                    return
                await self._connected(live, media_at)
        finally:
            live.move_settled.set()

    async def agent_connected(self, live: LiveCall, media_at: datetime | None = None) -> None:
        """The AI steps out; the ledger says the agent has the call (lock held), and when
        the agent's audio first reached Asterisk (the end of the connect time)."""
        live.agent_connected()
        await self.ctl.ai.leave(live)
        await self._connected(live, media_at)

    async def _connected(self, live: LiveCall, media_at: datetime | None) -> None:
        """The agent has the caller: the ledger, the AI's engine and the desks are told
        (lock held)."""
        assert live.handoff_id is not None
        async with self.store.transaction() as tx:
            await tx.handoffs.apply(live.handoff_id, HandoffEvent.AGENT_ANSWERED,
                                    media_at=media_at)
            # A handoff's call waits for it (a transfer's is with the first agent and
            # connects in handoff.live.transfer).
            await tx.calls.apply(
                live.call_id, CallEvent.AGENT_CONNECTED, agent_channel_id=live.agent,
                ai_channel_id=None, seen=CallState.HANDOFF_PENDING,
            )
        self.hub.publish(assistant_topic(live.assistant),
                         HandoffConnected(live.call_id, str(live.agent_id)))
        self.ctl.call_changed(live.call_id)
        self.ctl.announcements.say(live, Moment.HANDOVER)
        log.info("call=%s agent=%s connected via %s", live.call_id, live.agent_id, live.agent)

    async def agent_gone(self, live: LiveCall, cause: int) -> None:
        if live.connected and not live.move_settled.is_set():
            # An open line lost as it moved in: the AI left at once (bring_line) and the
            # ledger's connect is on its way. It goes first, so the loss reads as one of
            # a call the agent had: the AI comes back and the call is offered again.
            with contextlib.suppress(TimeoutError):
                await self.settled(live)
        async with live.lock:
            if live.ending:
                return
            # Before the move completed, losing the agent is a failed attempt, not a
            # call the agent had; a move still waiting for its overlap stops here.
            hung_up = live.agent in live.hung_up_by_phone
            answered, picked_up = live.agent_lost()
            handoff_id = live.handoff_id
            if not answered:
                # The AI never left. An agent who picked up and was gone at once (a tab
                # closed as the call arrived) vanished; other legs never answered.
                reason = FailureReason.AGENT_VANISHED if picked_up else unanswered(cause)
                if handoff_id is not None:
                    async with self.store.transaction() as tx:
                        await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL,
                                                failure_reason=reason)
                log.info("call=%s: agent leg ended before the move (%s); re-offering",
                         live.call_id, reason)
                if picked_up:
                    # The caller heard the agent for a moment: the AI says what happened.
                    self._tell_ai_agent_vanished(live)
                self.ctl.spawn(self.ctl.offers.reoffer(live, handoff_id),
                               f"reoffer {handoff_id}")
                return
            if hung_up:
                # The agent put the phone down (a desk phone's handset, a softphone's
                # hang-up): they ended the call, as End call on the desk does.
                live.end(CallOutcome.COMPLETED_BY_AGENT)
        if live.ending:  # the agent hung up, or End call came meanwhile
            await self.ctl.end_call(live.call_id, CallOutcome.COMPLETED_BY_AGENT)
            return
        # The agent's browser or network vanished mid-call: the caller goes back to the
        # AI, which apologises, and the call is offered again with higher priority.
        await self._back_to_ai(live, HandoffEvent.FAIL, FailureReason.AGENT_VANISHED)
        self._tell_ai_agent_vanished(live)
        self.ctl.spawn(self.ctl.offers.reoffer(live, handoff_id), f"reoffer {handoff_id}")

    def _tell_ai_agent_vanished(self, live: LiveCall) -> None:
        self.hub.publish(assistant_topic(live.assistant),
                         HandoffFailed(live.call_id, FailureReason.AGENT_VANISHED))

    async def return_to_ai(self, call_id: str) -> None:
        """The agent hands the caller back to the AI (raises CallStateConflict if no
        agent has the call)."""
        live = self.ctl.live(call_id)
        await self.settled(live)
        await self._back_to_ai(live, HandoffEvent.RETURN_TO_AI, None)
        self.hub.publish(assistant_topic(live.assistant), ReturnedToAi(call_id))

    async def _back_to_ai(
        self, live: LiveCall, event: HandoffEvent, reason: FailureReason | None
    ) -> None:
        async with live.lock:
            if event is HandoffEvent.RETURN_TO_AI and not live.connected:
                async with self.store.transaction() as tx:
                    call = await tx.calls.get(live.call_id)
                raise CallStateConflict(live.call_id, call.state, "no agent has this call")
            # The AI joins first, then the agent leaves: the caller never hears silence.
            if live.ai is None:
                try:
                    await self.ctl.ai.join(live, await self.ctl.engines.required(live.assistant))
                except AriError as exc:
                    if event is HandoffEvent.RETURN_TO_AI:
                        # The agent keeps the caller rather than hand them to nobody.
                        raise CallStateConflict(
                            live.call_id, CallState.WITH_AGENT,
                            f"the AI cannot take the caller back now ({exc.status})",
                        ) from exc
                    # The agent vanished and the AI cannot come back: hold music while
                    # the call is offered again.
                    log.error("call=%s: the AI could not rejoin: %s", live.call_id, exc)
                    await self.ctl.ai.hold(live)
                if event is HandoffEvent.RETURN_TO_AI and live.ai is not None:
                    # The agent stays until the AI's first words (an engine needs a
                    # moment to start talking on a new connection).
                    await self.ctl.media.until_voice_from(live.ai)
            await self.ctl.transfers.cancel(live)
            agent, agent_id = live.agent, live.agent_id
            live.agent_lost()
            if agent:
                # A line goes back to its holding bridge; a rung leg is hung up.
                await self.ctl.lines.release(agent)
            handoff_id, live.handoff_id = live.handoff_id, None
            ended = None
            async with self.store.transaction() as tx:
                if handoff_id is not None:
                    # The agent had the call: the handoff is connected.
                    ended = await tx.handoffs.apply(handoff_id, event, failure_reason=reason,
                                                    seen=HandoffState.CONNECTED)
                call_event = (CallEvent.RETURN_TO_AI if event is HandoffEvent.RETURN_TO_AI
                              else CallEvent.AGENT_LOST)
                await tx.calls.apply(live.call_id, call_event, ai_channel_id=live.ai,
                                     agent_channel_id=None)
            if event is HandoffEvent.RETURN_TO_AI:
                # The handoff just ended tells the wrap-up its queue: nothing to look up.
                self.ctl.presence.wrap_up(agent_id, ended)
        self.ctl.call_changed(live.call_id)
