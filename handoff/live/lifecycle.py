"""A call's start and end.

The caller's channel enters the call bridge when the call is answered and stays there
until the call ends; every change of who the caller talks to is a change of the *other*
legs in that bridge. So the caller's SIP dialog is never touched: no re-INVITE, no
transfer, no BYE until the call really ends. The end is the caller's leg going, whoever
hung it up: then every other leg goes, and the call gets its one outcome.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from handoff.assistants import FallbackKind
from handoff.calls import CallEvent, CallOutcome, CallState
from handoff.events import CARDS_TOPIC, CallEnded, Caller, CallStarted, assistant_topic
from handoff.handoffs import FailureReason, HandoffEvent, HandoffState
from handoff.live.call import LiveCall
from handoff.live.errors import OutOfHours
from handoff.live.flow import AiEngine, Flow
from handoff.live.legs import add_when_in_stasis, bridge_of, destroy, hang_up
from handoff.menus import Choice, Menu
from handoff.recordings import keep_recording
from handoff.store.models import Assistant, Handoff
from handoff.topics import topics_of
from pbx.ari import AriError, AriNotFound

if TYPE_CHECKING:
    from handoff.live.control import CallControl

log = logging.getLogger(__name__)

# The reason on the card of a caller who chose a queue in a number's menu.
MENU_REASON = "menu"


class Lifecycle(Flow):
    def __init__(self, ctl: CallControl) -> None:
        super().__init__(ctl)
        # Callers let in whose call is not in the registry yet: counted at once, so a
        # burst of callers arriving together cannot all pass the limit at once.
        self._starting = 0

    def full(self) -> bool:
        limit = self.ctl.call_limit
        return bool(limit) and len(self.ctl.registry.by_id) + self._starting >= limit

    async def start(self, channel: Mapping[str, Any], assistant: str | None,
                    dialled: str) -> None:
        """A caller reached a number: answer, bridge, record, bring the AI.

        ``assistant`` is the one the dialplan routed ``dialled`` to (None: no assistant
        answers that number). Which assistant takes the call, and its engine, are read
        from the store now, so a change made while Switchboard runs applies to this call.
        """
        caller = str(channel["id"])
        if self.full():
            # Before the answer and the store: a box at its limit turns the caller away
            # at once, as congestion (SIP 503), so the carrier can try another route,
            # rather than answering into an AI that cannot keep up.
            log.warning("call to %s refused: %d calls up, the limit "
                        "(routing.max_active_calls)", dialled, self.ctl.call_limit)
            self.ctl.refused("full")
            await hang_up(self.ari, caller, reason="congestion")
            return
        self._starting += 1
        try:
            await self._start(caller, channel, assistant, dialled)
        finally:
            self._starting -= 1

    async def _start(self, caller: str, channel: Mapping[str, Any], assistant: str | None,
                     dialled: str) -> None:
        record = await self.ctl.engines.answering(assistant, dialled)
        engine = self.ctl.engines.engine_of(record) if record is not None else None
        if record is None or engine is None:
            if record is not None:
                log.error("call to %s refused: assistant %s has no engine to take it (no "
                          "AudioSocket address, or the built-in receptionist is not running)",
                          dialled, record.name)
            # Not answered: the carrier hears "unallocated number" (SIP 404), as for a
            # number this PBX does not serve. No call row: nobody was ever on the line.
            self.ctl.refused("unallocated")
            await hang_up(self.ari, caller, reason="unallocated")
            return
        number = str(channel.get("caller", {}).get("number") or "")
        name = str(channel.get("caller", {}).get("name") or "") or None
        async with self.store.transaction() as tx:
            row = await tx.calls.create(
                caller_number=number,
                caller_name=name,
                caller_channel_id=caller,
                assistant_id=record.id,
            )
        live = LiveCall(row.id, record.name, caller, bridge_of(caller), number)
        self.ctl.registry.add(live)
        try:
            await self._answer(live)
        except AriError:
            if await self._still_there(caller):
                raise
            # The caller hung up (or the carrier cancelled) while being answered: their
            # hang-up is queued behind this event and closes the call; they reached
            # nobody.
            live.outcome = CallOutcome.ABANDONED
            log.info("call=%s caller=%s hung up while being answered", live.call_id, caller)
            return
        menu, who = Menu.of(record), Caller(number, name or "")
        if not menu.active:
            await self._with_ai(live, record, engine, who)
            return
        # A task of its own: the caller's keys and hang-up are events of this call, which
        # ARI hands over in order, after this StasisStart's handler returns.
        self.ctl.spawn(self._menu_first(live, menu, record, engine, who),
                       f"menu call={live.call_id}")

    async def _answer(self, live: LiveCall) -> None:
        async with live.lock:
            await self.ari.channels.answer(live.caller)
            # The call bridge: the caller joins it now and stays until the end.
            await self.ari.bridges.create(bridge_id=live.bridge, type="mixing")
            await add_when_in_stasis(self.ari, live.bridge, live.caller)
            live.recording = f"call-{live.call_id}"
            await self.ari.bridges.record(live.bridge, live.recording, format="wav")
            # Answered in the ledger before the AI hears the caller, so an engine that
            # reports its first words at once finds the call with the AI.
            async with self.store.transaction() as tx:
                await tx.calls.apply(live.call_id, CallEvent.ANSWER, bridge_id=live.bridge)

    async def _still_there(self, channel: str) -> bool:
        try:
            await self.ari.channels.get(channel)
        except AriNotFound:
            return False
        return True

    async def _menu_first(self, live: LiveCall, menu: Menu, record: Assistant,
                          engine: AiEngine, who: Caller) -> None:
        queue_id = None
        # Outside the call's lock: the caller may hang up in the menu.
        choice = await self.ctl.menus.choose(live, menu)
        if live.ending:
            return
        if choice is not None:
            record, engine, queue_id = await self._chosen(live, choice, record, engine)
        await self._with_ai(live, record, engine, who)
        if queue_id is not None and not live.ending:
            # The menu's assistant closed: its fallback applies already, no card.
            with contextlib.suppress(OutOfHours):
                await self.ctl.offers.request(
                    live.call_id, reason=MENU_REASON, summary="Chose this queue in the menu",
                    queue_id=queue_id)

    async def _chosen(self, live: LiveCall, choice: Choice, record: Assistant,
                      engine: AiEngine) -> tuple[Assistant, AiEngine, int | None]:
        """What a menu key leads to: another assistant (its AI, hours and rules take the
        call) or a queue (the menu's own AI keeps the caller while its members get the
        card). One that has gone since the menu was written: the menu's own assistant."""
        if choice.kind == "queue":
            async with self.store.transaction() as tx:
                queue = await tx.queues.by_name(choice.name)
            if queue is None:
                log.warning("call=%s: menu queue %s is gone", live.call_id, choice.name)
            return record, engine, queue.id if queue is not None else None
        chosen = await self.ctl.engines.answering(choice.name, f"menu of {record.name}")
        chosen_engine = self.ctl.engines.engine_of(chosen) if chosen is not None else None
        if chosen is None or chosen_engine is None:
            log.warning("call=%s: menu assistant %s cannot answer", live.call_id, choice.name)
            return record, engine, None
        live.assistant = chosen.name
        async with self.store.transaction() as tx:
            await tx.calls.set_assistant(live.call_id, chosen.id)
        return chosen, chosen_engine, None

    async def _with_ai(self, live: LiveCall, record: Assistant, engine: AiEngine,
                       who: Caller) -> None:
        assistant = record.name
        # Checked per call against the store, so an admin's new hours apply at once.
        out_of_hours = not self.ctl.engines.open_now(record)
        # Closed, with a voicemail: the caller hears its prompt at once, no AI first.
        no_ai = out_of_hours and record.fallback_kind is FallbackKind.VOICEMAIL
        async with live.lock:
            if live.ending:
                return
            if not no_ai:
                # Announced before the AI leg is asked for: an engine refuses a stream
                # whose call it has not heard of, and under load the announcement made
                # after the leg arrived too late (callers were refused and left in
                # silence).
                self.hub.publish(assistant_topic(assistant), CallStarted(
                    live.call_id, who, record.handoff_level.value,
                    [t.name for t in topics_of(record)], out_of_hours))
                await self.ctl.ai.join_or_recover(live, engine)
                async with self.store.transaction() as tx:
                    await tx.calls.set_legs(live.call_id, ai_channel_id=live.ai)
        self.ctl.call_changed(live.call_id)
        if not no_ai:
            log.info("call=%s caller=%s with AI %s", live.call_id, live.caller, assistant)
        if out_of_hours:
            log.info("call=%s to %s out of its business hours: fallback", live.call_id,
                     assistant)
            await self.ctl.offers.out_of_hours(live, record)

    async def end(self, call_id: str, outcome: CallOutcome | None = None) -> None:
        """Hang up the caller; the hang-up that follows records `outcome`, or else the
        one the call's state implies."""
        live = self.ctl.live(call_id)
        # An agent's End in the moment their leg has answered and their voice is not yet
        # heard: the move completes first (as for Return to AI), so the call ends as the
        # agent's, not as one the caller abandoned while waiting.
        with contextlib.suppress(TimeoutError):
            await self.ctl.settled(live)
        live.end(outcome)
        await hang_up(self.ari, live.caller)

    async def caller_gone(self, live: LiveCall, cause: int) -> None:
        async with live.lock:
            if live.closed:
                return
            live.close()
            self.ctl.offers.stop_timeout(live)
            await self.ctl.offers.unstage(live)
            # The transfer's handoff is closed with the others below; only its leg goes.
            moving, live.transfer = live.transfer, None
            for leg in (live.ai, live.forward):
                if leg:
                    await hang_up(self.ari, leg)
            # The agents' legs: an open line goes back to its holding bridge.
            for leg in (live.agent, moving.leg if moving else None):
                if leg:
                    await self.ctl.lines.release(leg)
            await destroy(self.ari, live.bridge)
            talked_to: list[Handoff] = []  # handoffs whose agent's part ends here
            # Taken before the transaction: from an Asterisk on another host (its ARI
            # stored recordings) it is a download, not a rename.
            kept = await self.keep_recording(live) if live.recording else None
            async with self.store.transaction() as tx:
                call = await tx.calls.get(live.call_id)
                open_handoffs = await tx.handoffs.open_for_call(live.call_id)
                for handoff in open_handoffs:
                    # Each step leaves the state just read (seen): one UPDATE, no re-read.
                    if live.pbx_hangup:
                        await tx.handoffs.apply(handoff.id, HandoffEvent.FAIL,
                                                failure_reason=FailureReason.PBX_RESTART,
                                                seen=handoff.state)
                        continue
                    event = (HandoffEvent.CALLER_HUNG_UP if handoff.state is not
                             HandoffState.CONNECTED else HandoffEvent.END)
                    ended = await tx.handoffs.apply(handoff.id, event, seen=handoff.state)
                    if event is HandoffEvent.END:
                        talked_to.append(ended)
                outcome = (
                    CallOutcome.PBX_RESTART if live.pbx_hangup
                    else live.outcome if live.outcome is not None
                    else CallOutcome.FALLBACK_NUMBER if call.state is CallState.FORWARDED
                    else CallOutcome.COMPLETED_BY_AGENT if call.state is CallState.WITH_AGENT
                    else CallOutcome.ABANDONED if open_handoffs
                    else CallOutcome.CALLBACK_REQUESTED if live.callback_requested
                    else CallOutcome.COMPLETED_BY_AI
                )
                end_cause = (f"hung up by the PBX (cause {cause})" if live.pbx_hangup
                             else f"caller's line lost: no media (cause {cause})"
                             if live.line_lost else str(cause))
                await tx.calls.close(live.call_id, outcome, end_cause=end_cause,
                                     recording_path=kept, seen=call.state)
        for ended in talked_to:
            self.ctl.presence.wrap_up(ended.accepted_by, ended)
        self.ctl.registry.remove(live)
        self.hub.publish(CARDS_TOPIC, CallEnded(live.call_id))
        self.hub.publish(assistant_topic(live.assistant), CallEnded(live.call_id))
        log.info("call=%s ended (cause %s)", live.call_id, cause)

    async def keep_recording(self, live: LiveCall) -> str:
        return await keep_recording(f"{live.recording}.wav", self.ctl.spool,
                                    self.ctl.recordings)
