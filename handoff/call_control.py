"""The live call: one mixing bridge per call, the AI leg, the move to an agent and back.

The caller's channel enters the call bridge when the call is answered and stays there
until the call ends; every change of who the caller talks to is a change of the *other*
legs in that bridge. So the caller's SIP dialog is never touched: no re-INVITE, no
transfer, no BYE until the call really ends.

Order per call: every leg we create gets an id that starts with the caller's channel
id (``<caller>~ai~1``, ``<caller>~agent~2``, bridge ``<caller>~bridge``), and the ARI
client orders events by that prefix, so all events of one call are handled one after
the other while different calls run concurrently. Commands that do not come from ARI
(an Accept click, an AI's handoff request) take the call's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from handoff.agents import Presence
from handoff.assistants import FallbackKind, accept_timeout_s
from handoff.calls import CallDirection, CallEvent, CallOutcome, CallState
from handoff.events import (
    AGENTS_TOPIC,
    CALLS_TOPIC,
    EventHub,
    agent_changed_event,
    call_changed_event,
)
from handoff.handoffs import (
    FailureReason,
    HandoffEvent,
    HandoffState,
    handoff_priority,
    reoffer_level,
)
from handoff.recordings import keep_recording
from handoff.store import Store
from handoff.store.errors import NotFound
from handoff.store.models import Handoff
from handoff.store.transitions import utc_now
from pbx.ari import AriClient, AriError, AriNotFound, AriUnprocessable

log = logging.getLogger(__name__)

SEP = "~"
# Q.850 causes with which an agent leg ends before answering.
CALLBACK_NOTE = "Callback requested:"
_DIALABLE = re.compile(r"^\+?[0-9]{2,20}$")
_NO_ANSWER = {18, 19}
_REJECTED = {17, 21}
_NORMAL_CLEARING = 16
# The reason of the handoff asked for when the AI engine fails a caller twice.
AI_FAILED_REASON = "ai_failed"
# Said to a caller whom neither the AI nor a person can take (Asterisk's core sounds);
# a callback request is on record for them.
APOLOGY = ("sound:im-sorry", "sound:please-try-call-later")
APOLOGY_MAX_S = 10.0


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _phone_hung_up(event: Mapping[str, Any]) -> bool:
    """Whether a ChannelHangupRequest is the leg's own phone ending the call normally.

    What Asterisk 22 reports (observed on this PBX): a phone's BYE queues the hang-up
    with no cause, or with its RFC 3326 Reason's cause (Q.850 16 from a phone that says
    "normal clearing"); a refused INVITE carries the refusal's cause (408: 18, 480: 19,
    503: 34). Hang-ups of Asterisk's own are soft, and their "cause" is its soft-hangup
    flag, not a Q.850 cause: the RTP timeout's is 1 (its cause 44 comes only with
    ChannelDestroyed), an ARI hang-up's 32. A browser closing the Desk hangs up with a
    Reason of its own (softphone.js), so a closed tab is not an agent ending the call.
    """
    return not event.get("soft") and int(event.get("cause", _NORMAL_CLEARING)) == (
        _NORMAL_CLEARING)


def _unanswered(cause: int) -> FailureReason:
    """Why an agent leg that ended before answering failed, from its Q.850 cause."""
    if cause in _NO_ANSWER:
        return FailureReason.AGENT_NO_ANSWER
    if cause in _REJECTED:
        return FailureReason.AGENT_REJECTED
    return FailureReason.AGENT_LEG_FAILED


def call_key(event: Mapping[str, Any]) -> str:
    """ARI ordering key: the caller's channel id, which prefixes every id of its call."""
    for name in ("channel", "peer", "bridge"):
        obj = event.get(name)
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            return str(obj["id"]).split(SEP)[0]
    for name in ("playback", "recording"):
        obj = event.get(name)
        if isinstance(obj, dict) and isinstance(obj.get("target_uri"), str):
            return str(obj["target_uri"]).split(":", 1)[-1].split(SEP)[0]
    return "global"


async def add_when_in_stasis(
    ari: AriClient, bridge_id: str, channel: str | list[str], within: float = 2.0
) -> None:
    """addChannel, retried while Asterisk says the new leg is not in Stasis yet (422).

    A leg we just created (external media, a created agent leg) enters Stasis a moment
    after the REST call returns; its StasisStart is queued behind the handler that is
    creating it, so waiting for that event here would wait for ourselves.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await ari.bridges.add_channel(bridge_id, channel)
            return
        except AriUnprocessable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.002)


class CallStateConflict(Exception):
    """The call is not in a state that allows the command (ended, with a person...)."""

    def __init__(self, call_id: str, state: CallState, what: str) -> None:
        super().__init__(f"call {call_id} is {state.value}: {what}")
        self.call_id = call_id
        self.state = state


class AgentUnreachable(Exception):
    """The winner's phone could not be dialled; the accept was rolled back."""

    def __init__(self, agent_id: int, why: str) -> None:
        super().__init__(f"agent {agent_id} could not be reached: {why}")
        self.agent_id = agent_id


class AiEngine(Protocol):
    """Where an assistant's AudioSocket audio goes, and how it learns a call is coming."""

    @property
    def address(self) -> str: ...

    def expect_call(self, call_id: str) -> None: ...


@dataclass
class LiveCall:
    call_id: str
    assistant: str
    caller: str  # the caller's channel id: the key of everything in this call
    bridge: str
    caller_number: str = ""
    ai: str | None = None
    agent: str | None = None
    agent_id: int | None = None
    agent_kind: str = "webrtc"
    agent_answered: bool = False  # the agent's leg is up
    connected: bool = False  # ...and the AI has left: the agent has the call
    handoff_id: int | None = None
    recording: str | None = None
    legs: int = 0
    # Agent legs created (not dialled) and already in the bridge while a handoff is on
    # offer, by agent id: the winner's leg only needs a dial.
    staged: dict[int, tuple[str, str]] = field(default_factory=dict)  # leg, endpoint kind
    # A transfer on offer or ringing: the first agent keeps talking to the caller until
    # the second agent's leg answers, then that leg replaces theirs in the same bridge.
    transfer: Transfer | None = None
    ending: bool = False
    closed: bool = False
    forward: str | None = None  # the leg to the assistant's fallback number
    forward_answered: bool = False
    callback_requested: bool = False
    # AI legs that failed in this call (an engine that refused or dropped the stream):
    # the first is replaced at once, the second puts the caller on hold for a person.
    ai_failures: int = 0
    on_hold: bool = False  # hold music in the call bridge: no AI and no person yet
    # How the call ends, when the controller ends it for a reason of its own (the agent
    # hung up, nobody can take the caller); otherwise it follows from the call's state.
    outcome: CallOutcome | None = None
    pbx_hangup: bool = False  # the caller's leg was ended by Asterisk, not by the caller
    caller_leaving: bool = False  # a hang-up of the caller's leg is on its way
    causes: dict[str, int] = field(default_factory=dict)  # Q.850 cause per ended leg
    hung_up_by_phone: set[str] = field(default_factory=set)  # agent legs ended by a BYE
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    # Clear from the agent's answer until the AI has left (the short overlap): commands
    # that change who the caller talks to wait for it rather than refuse.
    move_settled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.move_settled.set()

    def new_leg_id(self, role: str) -> str:
        # Unique across controller restarts too: an adopted call's earlier legs keep
        # their ids, so a counter alone could repeat one.
        self.legs += 1
        return f"{self.caller}{SEP}{role}{SEP}{self.legs}{secrets.token_hex(2)}"


@dataclass
class Transfer:
    """An agent handing their caller on to a named colleague, with a note."""

    handoff_id: int
    to_agent: int
    leg: str | None = None  # the colleague's leg, once they accepted and it rings
    kind: str = "webrtc"


class AgentNotAvailable(Exception):
    """A transfer names an agent who is off duty, away or on another call."""

    def __init__(self, agent_id: int) -> None:
        super().__init__(f"agent {agent_id} is not available")
        self.agent_id = agent_id


@dataclass
class Timing:
    ring_timeout_s: int = 20
    # How many likely agents get a leg staged in the call bridge per offered handoff.
    # Each is an idle, undialled channel: cheap, but not free, so bounded.
    staged_agents: int = 4
    # The AI leaves once the agent's voice reaches Asterisk, not at the 200 OK: a desk
    # phone's first RTP packet trails its answer by a few ms, a browser's by 60-130 ms
    # (ICE and DTLS come after the answer). Removing the AI before that left the caller
    # in silence. It leaves this long after the agent's first packet arrived (one mixing
    # frame and a margin: a short overlap is not noticeable, a hole in the audio is)...
    ai_overlap_s: float = 0.04
    # ...or after this long without any packet from the agent (a phone that suppresses
    # silence sends nothing until its user speaks).
    agent_media_wait_s: float = 1.5
    # How often the agent leg's RTP counters are read while waiting.
    agent_media_poll_s: float = 0.005
    # After their part of a call, an available agent is in wrap-up this long (notes,
    # follow-up) before the next card; 0: straight back to available. The product sets
    # it from the desk.wrap_up_s setting (default 15 s).
    wrap_up_s: float = 0.0


class CallControl:
    def __init__(
        self,
        ari: AriClient,
        store: Store,
        hub: EventHub,
        engines: Mapping[str, AiEngine],
        *,
        app: str = "switchboard",
        fallback_trunk: str | None = None,
        recordings: Path | None = None,
        host_path: Callable[[str], Path] | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.ari = ari
        self.store = store
        self.hub = hub
        self.engines = engines
        self.app = app
        self.fallback_trunk = fallback_trunk
        self.recordings = recordings
        self.host_path = host_path
        self.timing = timing or Timing()
        self.calls: dict[str, LiveCall] = {}  # by call id
        self._by_caller: dict[str, LiveCall] = {}  # by caller channel id
        self._tasks: set[asyncio.Task[None]] = set()
        # Other parts of the controller with legs and bridges in this Stasis app
        # (supervision sessions, call-backs): reconcile first lets them take up their
        # own (adopt), then leaves what they name alone (owned).
        self._other_owners: list[Callable[[], Iterable[str]]] = []
        self._other_adopters: list[Callable[[], Awaitable[None]]] = []
        # Legs whose first words someone waits for (TALK_DETECT), by channel id.
        self._talking: dict[str, asyncio.Future[None]] = {}
        # Playbacks someone waits to finish, by playback id.
        self._playing: dict[str, asyncio.Future[None]] = {}
        for kind, handler in (
            ("StasisStart", self._on_stasis_start),
            ("ChannelStateChange", self._on_state_change),
            ("ChannelHangupRequest", self._on_hangup_request),
            ("ChannelDestroyed", self._on_leg_gone),
            ("StasisEnd", self._on_leg_gone),
            ("ChannelTalkingStarted", self._on_talking),
            ("PlaybackFinished", self._on_playback_finished),
        ):
            ari.on(kind, handler)

    # ---- lifecycle -------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        """Background work is tracked: it is cancelled on close and its errors are logged."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())

        task.add_done_callback(done)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def phone_registered(self, sip_user: str) -> bool | None:
        """Whether the agent's phone is registered and answering with the PBX (its PJSIP
        endpoint is online); None when the PBX cannot say right now."""
        try:
            # An agent waits on this to go on duty: a PBX slow to answer does not hold
            # them up (nor does it count against them).
            async with asyncio.timeout(2.0):
                endpoint = await self.ari.endpoints.get("PJSIP", sip_user)
        except AriNotFound:
            return False
        except (AriError, TimeoutError) as exc:
            log.warning("could not ask the PBX about %s's phone: %r", sip_user, exc)
            return None
        return endpoint.get("state") == "online"

    # ---- ARI events --------------------------------------------------------------------

    async def _on_stasis_start(self, event: Mapping[str, Any]) -> None:
        args = event.get("args") or []
        channel = event["channel"]
        if args[:1] == ["inbound"] and len(args) >= 2:
            await self._start_call(channel, assistant=args[1])

    async def _start_call(self, channel: Mapping[str, Any], assistant: str) -> None:
        caller = str(channel["id"])
        engine = self.engines.get(assistant)
        number = str(channel.get("caller", {}).get("number") or "")
        name = str(channel.get("caller", {}).get("name") or "") or None
        async with self.store.transaction() as tx:
            record = await tx.assistants.by_name(assistant)
            row = await tx.calls.create(
                caller_number=number,
                caller_name=name,
                caller_channel_id=caller,
                assistant_id=record.id if record else None,
            )
        live = LiveCall(row.id, assistant, caller, f"{caller}{SEP}bridge", number)
        self.calls[live.call_id] = live
        self._by_caller[caller] = live
        if engine is None or record is None:
            # A number routed to an assistant that is not configured (both an engine and
            # its row are needed, or a restarted controller could not bring the AI back).
            log.error("call=%s: assistant %r is not configured; refusing the call",
                      live.call_id, assistant)
            await self._hangup(caller)
            return
        async with live.lock:
            await self.ari.channels.answer(caller)
            # The call bridge: the caller joins it now and stays until the end.
            await self.ari.bridges.create(bridge_id=live.bridge, type="mixing")
            await self._bridge_add(live.bridge, caller)
            live.recording = f"call-{live.call_id}"
            await self.ari.bridges.record(live.bridge, live.recording, format="wav")
            # Answered in the ledger before the AI hears the caller, so an engine that
            # reports its first words at once finds the call with the AI.
            async with self.store.transaction() as tx:
                await tx.calls.apply(live.call_id, CallEvent.ANSWER, bridge_id=live.bridge)
            # Announced before the AI leg is asked for: an engine refuses a stream whose
            # call it has not heard of, and under load the announcement made after the
            # leg arrived too late (callers were refused and left in silence).
            self.hub.publish(
                f"assistant:{assistant}",
                {"type": "call_started", "call_id": live.call_id,
                 "caller": {"number": number, "name": name or ""}},
            )
            try:
                await self._join_ai(live, engine)
            except AriError as exc:
                log.warning("call=%s: the AI leg could not be set up: %s", live.call_id, exc)
                self._spawn(self._ai_lost(live), f"AI lost call={live.call_id}")
            async with self.store.transaction() as tx:
                await tx.calls.set_legs(live.call_id, ai_channel_id=live.ai)
        self.call_changed(live.call_id)
        log.info("call=%s caller=%s with AI %s", live.call_id, caller, assistant)

    async def _join_ai(self, live: LiveCall, engine: AiEngine) -> None:
        """A new AI leg in the call bridge (lock held). Raises AriError, leaving no leg
        behind, when the engine cannot be reached or its leg is gone at once."""
        engine.expect_call(live.call_id)
        ai = live.new_leg_id("ai")
        try:
            await self.ari.channels.external_media_audiosocket(
                self.app, engine.address, live.call_id, channel_id=ai
            )
            await self._bridge_add(live.bridge, ai)
        except AriError:
            await self._hangup(ai)
            raise
        live.ai = ai
        await self._unhold(live)

    # ---- when the AI fails --------------------------------------------------------------

    async def _ai_lost(self, live: LiveCall) -> None:
        """The caller's AI leg failed (could not be set up, or ended on its own): the
        caller must never be left in silence.

        One new leg is tried at once: an engine busy for a moment or a dropped
        connection usually takes the next one. If that fails too, the caller hears hold
        music and a person is asked for (a handoff of reason ``ai_failed``); a card
        already on offer simply goes on. Nobody to take it ends in the assistant's
        fallback (see _give_up).
        """
        async with live.lock:
            if live.ending or live.caller_leaving or live.ai is not None \
                    or live.agent_answered or live.forward_answered:
                return  # the call ended, or someone else is talking to the caller
            live.ai_failures += 1
            engine = self.engines.get(live.assistant)
            if live.ai_failures == 1 and engine is not None:
                try:
                    await self._join_ai(live, engine)
                except AriError as exc:
                    live.ai_failures += 1
                    log.warning("call=%s: the AI leg failed again at once: %s",
                                live.call_id, exc)
                else:
                    async with self.store.transaction() as tx:
                        await tx.calls.set_legs(live.call_id, ai_channel_id=live.ai)
                    log.warning("call=%s: AI leg replaced by %s", live.call_id, live.ai)
                    return
            await self._hold(live)
            async with self.store.transaction() as tx:
                await tx.calls.set_legs(live.call_id, ai_channel_id=None)
                state = (await tx.calls.get(live.call_id)).state
        log.error("call=%s: the AI failed twice; the caller is on hold for a person",
                  live.call_id)
        self.call_changed(live.call_id)
        if state is CallState.WITH_AI:
            await self.request_handoff(
                live.call_id, reason=AI_FAILED_REASON, priority="high",
                summary="The AI stopped working during this call; the caller is on hold.",
            )

    async def _hold(self, live: LiveCall) -> None:
        """Hold music in the call bridge while neither the AI nor a person has the caller
        (lock held; recorded with the rest of the call)."""
        if live.on_hold:
            return
        try:
            await self.ari.bridges.start_moh(live.bridge)
            live.on_hold = True
        except AriError as exc:
            log.error("call=%s: no hold music for the caller: %s", live.call_id, exc)

    async def _unhold(self, live: LiveCall) -> None:
        if not live.on_hold:
            return
        live.on_hold = False
        with contextlib.suppress(AriError):
            await self.ari.bridges.stop_moh(live.bridge)

    async def _on_playback_finished(self, event: Mapping[str, Any]) -> None:
        waiter = self._playing.pop(str(event["playback"]["id"]), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _apologise_and_end(self, live: LiveCall) -> None:
        """Neither the AI nor a person can take this caller: say sorry, then hang up.
        The callback request on record is how the call centre gets back to them."""
        live.outcome = CallOutcome.FAILED  # even if the caller hangs up during the apology
        playback = f"{live.caller}{SEP}apology"
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._playing[playback] = finished
        try:
            async with live.lock:
                if live.ending:
                    return
                await self._unhold(live)
                await self.ari.bridges.play(live.bridge, APOLOGY, playback_id=playback)
            async with asyncio.timeout(APOLOGY_MAX_S):
                await finished
        except (AriError, TimeoutError) as exc:
            log.warning("call=%s: the apology was not played: %r", live.call_id, exc)
        finally:
            self._playing.pop(playback, None)
        if not live.ending:
            log.info("call=%s: nobody can take the caller; ending the call", live.call_id)
            await self.end_call(live.call_id)

    async def _on_state_change(self, event: Mapping[str, Any]) -> None:
        channel = event["channel"]
        live = self._by_caller.get(call_key(event))
        if live is None or channel.get("state") != "Up":
            return
        if channel["id"] == live.forward:
            await self._forward_answered(live)
            return
        if live.transfer is not None and channel["id"] == live.transfer.leg:
            self._spawn(self._complete_transfer(live), f"transfer call={live.call_id}")
            return
        if channel["id"] != live.agent:
            return
        async with live.lock:
            if live.agent_answered or live.ending:
                return
            self._agent_answered(live)

    async def _forward_answered(self, live: LiveCall) -> None:
        async with live.lock:
            if live.ending or live.forward_answered:
                return
            live.forward_answered = True
        self._spawn(self._complete_forward(live), f"forward call={live.call_id}")

    async def _complete_forward(self, live: LiveCall) -> None:
        if live.forward is not None:
            await self._until_media_from(live.forward)
        await asyncio.sleep(self.timing.ai_overlap_s)
        async with live.lock:
            if live.closed or live.caller_leaving:
                return
            ai, live.ai = live.ai, None
            if ai:
                await self._hangup(ai)
            await self._unhold(live)
            async with self.store.transaction() as tx:
                await tx.calls.apply(live.call_id, CallEvent.FORWARD, ai_channel_id=None)
        log.info("call=%s forwarded to the fallback number", live.call_id)

    def _agent_answered(self, live: LiveCall) -> None:
        """The agent's leg is up: the AI leaves shortly and the call is the agent's.

        The agent is already in the bridge (added before the dial), so their first words
        reach the caller at once; the AI steps out once the agent's audio flows. That
        runs as its own task, so this call's next events (the caller hanging up right
        now, say) are not queued behind the wait.
        """
        live.agent_answered = True
        live.answered.set()
        live.move_settled.clear()
        self._spawn(self._complete_move(live), f"move call={live.call_id}")

    async def _complete_move(self, live: LiveCall) -> None:
        try:
            if live.agent is not None:
                await self._until_media_from(live.agent)
            await asyncio.sleep(self.timing.ai_overlap_s)
            async with live.lock:
                if live.closed or live.caller_leaving or not live.agent_answered:
                    # The caller hung up as the agent answered: they never talked. The
                    # hang-up handler abandons the handoff and cleans up.
                    return
                await self._agent_connected(live)
        finally:
            live.move_settled.set()

    async def _until_media_from(self, leg: str) -> None:
        """Return once Asterisk has received RTP from `leg` (bounded; see Timing)."""
        deadline = time.monotonic() + self.timing.agent_media_wait_s
        while time.monotonic() < deadline:
            try:
                stats = await self.ari.channels.rtp_statistics(leg)
            except AriError:
                return  # the leg went (its hang-up is handled) or has no RTP instance
            if int(stats.get("rxcount") or 0) > 0:
                return
            await asyncio.sleep(self.timing.agent_media_poll_s)
        log.info("leg %s sent no audio within %.1f s of answering; the AI leaves anyway",
                 leg, self.timing.agent_media_wait_s)

    async def _on_talking(self, event: Mapping[str, Any]) -> None:
        waiter = self._talking.pop(str(event["channel"]["id"]), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _until_voice_from(self, leg: str) -> None:
        """Return once Asterisk hears `leg` speak (TALK_DETECT; bounded, see Timing).

        For an AI leg, whose AudioSocket stream is not RTP: a rejoining AI needs a
        moment before its first words, and the agent must not leave before them.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._talking[leg] = waiter
        try:
            await self.ari.channels.set_variable(leg, "TALK_DETECT(set)", "")
            async with asyncio.timeout(self.timing.agent_media_wait_s):
                await waiter
        except TimeoutError:
            log.info("leg %s did not speak within %.1f s; going on",
                     leg, self.timing.agent_media_wait_s)
        except AriError:
            pass  # the leg went: whoever waits finds out
        finally:
            self._talking.pop(leg, None)
        with contextlib.suppress(AriError):
            await self.ari.channels.set_variable(leg, "TALK_DETECT(remove)", "")

    def call_changed(self, call_id: str) -> None:
        """Something the agent's call panel or the supervisor board shows has changed
        (the call started, an agent connected or left, a transfer moved on)."""
        self.hub.publish(CALLS_TOPIC, call_changed_event(call_id))

    def wrap_up(self, agent_id: int | None) -> None:
        """The agent's part of a call is over: a short wrap-up before the next card."""
        if agent_id is not None and self.timing.wrap_up_s > 0:
            self._spawn(self._wrap_up_then_available(agent_id), f"wrap-up agent={agent_id}")

    async def _wrap_up_then_available(self, agent_id: int) -> None:
        # Only from "available": an agent who chose away (or went off duty) keeps that.
        # Back to available only if still in wrap-up: the agent may have ended it early
        # or chosen something else meanwhile. A controller restart in between leaves
        # the agent in wrap-up until they choose (the desk shows it).
        if not await self._move_presence(agent_id, Presence.AVAILABLE, Presence.WRAP_UP):
            return
        await asyncio.sleep(self.timing.wrap_up_s)
        await self._move_presence(agent_id, Presence.WRAP_UP, Presence.AVAILABLE)

    async def _move_presence(self, agent_id: int, was: Presence, becomes: Presence) -> bool:
        async with self.store.transaction() as tx:
            try:
                agent = await tx.agents.get(agent_id)
            except NotFound:
                return False
            if agent.presence is not was or not agent.on_duty:
                return False
            await tx.agents.set_presence(agent_id, becomes)
        self.hub.publish(AGENTS_TOPIC, agent_changed_event(agent_id))
        return True

    async def settled(self, live: LiveCall) -> None:
        """Wait out a move in progress (the agent answered, the AI is still leaving).

        An agent who clicks "return to AI" or a supervisor who takes over in those few
        tens of milliseconds gets their command carried out, not a refusal.
        """
        async with asyncio.timeout(
                self.timing.agent_media_wait_s + self.timing.ai_overlap_s + 5):
            await live.move_settled.wait()

    async def _agent_connected(self, live: LiveCall) -> None:
        """The AI steps out; the ledger says the agent has the call (lock held)."""
        live.connected = True
        ai, live.ai = live.ai, None
        if ai:
            await self._hangup(ai)
        await self._unhold(live)
        assert live.handoff_id is not None
        async with self.store.transaction() as tx:
            await tx.handoffs.apply(live.handoff_id, HandoffEvent.AGENT_ANSWERED)
            await tx.calls.apply(
                live.call_id, CallEvent.AGENT_CONNECTED, agent_channel_id=live.agent,
                ai_channel_id=None,
            )
        self.hub.publish(
            f"assistant:{live.assistant}",
            {"type": "handoff_connected", "call_id": live.call_id, "agent": str(live.agent_id)},
        )
        self.call_changed(live.call_id)
        log.info("call=%s agent=%s connected via %s", live.call_id, live.agent_id, live.agent)

    async def _on_hangup_request(self, event: Mapping[str, Any]) -> None:
        live = self._by_caller.get(call_key(event))
        if live is None:
            return
        channel = str(event["channel"]["id"])
        if "cause" in event:
            live.causes[channel] = int(event["cause"])
        if channel == live.agent and _phone_hung_up(event):
            # Known only now: the StasisEnd that ends the leg for us carries no cause.
            live.hung_up_by_phone.add(channel)
        if channel == live.caller:
            live.caller_leaving = True
        if channel == live.caller and event.get("soft") and not live.ending:
            # A soft hang-up we did not ask for comes from Asterisk itself: a shutdown or
            # restart (or an administrator's `channel request hangup`), not the caller.
            live.pbx_hangup = True

    async def _on_leg_gone(self, event: Mapping[str, Any]) -> None:
        """StasisEnd or ChannelDestroyed, whichever comes first, ends a leg for us.

        Once a channel leaves Stasis the app is no longer subscribed to it, so its
        ChannelDestroyed may never reach us; its cause was kept from the hang-up request.
        """
        channel_id = str(event["channel"]["id"])
        live = self._by_caller.get(call_key(event))
        if live is None:
            return
        if "cause" in event:
            live.causes[channel_id] = int(event["cause"])
        cause = live.causes.get(channel_id, 0)
        if channel_id == live.caller:
            await self._caller_gone(live, cause)
        elif channel_id == live.forward:
            live.forward = None
            if live.forward_answered:
                # The fallback party hung up: the call is over for the caller too.
                await self.end_call(live.call_id)
            else:
                live.callback_requested = True
                if live.ai is None and not live.ending:
                    # Nobody answered the fallback, and the AI had failed before.
                    self._spawn(self._apologise_and_end(live), f"apology call={live.call_id}")
        elif channel_id == live.agent:
            await self._agent_gone(live, cause)
        elif live.transfer is not None and channel_id == live.transfer.leg:
            await self._transfer_failed(live, cause)
        elif channel_id == live.ai and not live.ending:
            log.warning("call=%s: AI leg %s ended unexpectedly (cause %s)",
                        live.call_id, channel_id, cause)
            live.ai = None
            self._spawn(self._ai_lost(live), f"AI lost call={live.call_id}")

    # ---- handoff -------------------------------------------------------------------------

    async def request_handoff(
        self,
        call_id: str,
        *,
        reason: str,
        summary: str,
        topic: str | None = None,
        priority: str = "normal",
        attempt: int = 1,
    ) -> int:
        """Open a handoff and offer it; the caller keeps the AI meanwhile."""
        live = self._live(call_id)
        async with live.lock:
            async with self.store.transaction() as tx:
                call = await tx.calls.get(call_id)
                if call.state not in (CallState.WITH_AI, CallState.HANDOFF_PENDING):
                    raise CallStateConflict(call_id, call.state, "a handoff cannot start")
                handoff = await tx.handoffs.request(
                    call_id, reason=reason, summary=summary, topic=topic,
                    priority=handoff_priority(priority, attempt), attempt=attempt,
                )
                if call.state is CallState.WITH_AI:
                    await tx.calls.apply(call_id, CallEvent.REQUEST_HANDOFF)
                await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)
                assistant = await tx.assistants.by_name(live.assistant)
                nobody = not await tx.agents.available()
            live.handoff_id = handoff.id
            timeout = accept_timeout_s(assistant)
            if not nobody:
                await self._stage_agents(live)
        if nobody:
            # Nobody is on duty: no card would ever be taken, so fall back right away.
            self._spawn(self._give_up(live, handoff.id, FailureReason.NO_AGENTS), "no agents")
            return handoff.id
        self.hub.publish("cards", {"type": "offered", "call_id": call_id,
                                   "handoff_id": handoff.id})
        self._spawn(self._offer_timeout(live, handoff.id, timeout),
                    f"offer timeout {handoff.id}")
        return handoff.id

    async def _stage_agents(self, live: LiveCall) -> None:
        """Create the likely agents' legs now, undialled, and put them in the call bridge.

        Creating a leg and bridging it are two ARI round trips that would otherwise sit
        between the Accept click and the agent's phone ringing. An undialled channel is
        silent and rings nobody; the losers' legs are hung up after the accept.
        """
        async with self.store.transaction() as tx:
            candidates = list(await tx.agents.available())[: self.timing.staged_agents]
        for agent in candidates:
            if agent.id in live.staged:
                continue
            try:
                leg = await self._create_agent_leg(live, agent.sip_user)
            except AriError as exc:
                log.warning("call=%s: could not stage a leg for agent %s: %s",
                            live.call_id, agent.id, exc)
                continue
            live.staged[agent.id] = (leg, str(agent.endpoint_kind))

    async def _unstage(self, live: LiveCall) -> None:
        for agent_id, (leg, _) in list(live.staged.items()):
            del live.staged[agent_id]
            await self._hangup(leg)

    async def _offer_timeout(self, live: LiveCall, handoff_id: int, timeout: float) -> None:
        await asyncio.sleep(timeout)
        await self._give_up(live, handoff_id, FailureReason.TIMEOUT)

    async def _give_up(self, live: LiveCall, handoff_id: int, reason: FailureReason) -> None:
        """Nobody took the call: the assistant's fallback applies.

        Either a number over the trunk (the caller is bridged to it; the AI leaves when
        it answers) or the AI keeps the caller and a callback request is recorded.
        """
        async with live.lock:
            if live.ending:
                return
            async with self.store.transaction() as tx:
                handoff = await tx.handoffs.get(handoff_id)
                if handoff.state is not HandoffState.OFFERED:
                    return
                if reason is FailureReason.TIMEOUT:
                    await tx.handoffs.apply(handoff_id, HandoffEvent.TIME_OUT)
                else:
                    await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL, failure_reason=reason)
                await tx.calls.apply(live.call_id, CallEvent.HANDOFF_FAILED)
                assistant = await tx.assistants.by_name(live.assistant)
            live.handoff_id = None
            await self._unstage(live)
            number = assistant.fallback_number if assistant else None
            forwarded = False
            if assistant and assistant.fallback_kind is FallbackKind.NUMBER and number:
                forwarded = await self._forward(live, number)
            if not forwarded:
                live.callback_requested = True
                async with self.store.transaction() as tx:
                    await tx.notes.add(
                        f"{CALLBACK_NOTE} nobody could take the call ({reason.value}).",
                        call_id=live.call_id, contact_number=live.caller_number or None,
                    )
                if live.ai is None:
                    # The AI failed earlier: nobody is left to keep the caller company.
                    self._spawn(self._apologise_and_end(live), f"apology call={live.call_id}")
        self.hub.publish("cards", {"type": "withdrawn", "handoff_id": handoff_id,
                                   "reason": reason.value})
        self.hub.publish(f"assistant:{live.assistant}",
                         {"type": "handoff_failed", "call_id": live.call_id,
                          "reason": reason.value,
                          "fallback": "number" if forwarded else "callback"})

    async def _forward(self, live: LiveCall, number: str) -> bool:
        """Ring the fallback number over the trunk, bridged early like an agent leg.

        The number comes from the assistant's settings, never from the caller, and is
        checked to be a plain number so it cannot smuggle a second dial string.
        """
        if not _DIALABLE.match(number) or self.fallback_trunk is None:
            log.error("call=%s: fallback %r not dialable (trunk %s)", live.call_id, number,
                      self.fallback_trunk)
            return False
        leg = live.new_leg_id("forward")
        try:
            await self.ari.channels.create(
                f"PJSIP/{number}@{self.fallback_trunk}", self.app,
                app_args=["forward", live.call_id], channel_id=leg, originator=live.caller,
            )
            await self._bridge_add(live.bridge, leg)
            await self.ari.channels.dial(leg, caller=live.caller,
                                         timeout=self.timing.ring_timeout_s)
        except AriError as exc:
            log.warning("call=%s: fallback number could not be dialled: %s", live.call_id, exc)
            await self._hangup(leg)
            return False
        live.forward = leg
        return True

    async def accept(self, handoff_id: int, agent_id: int) -> None:
        """The winning agent's leg rings as soon as the database says who won.

        Only one agent gets past ``tx.handoffs.accept`` (a conditional UPDATE); the
        others get :class:`AlreadyTaken`. The leg is usually staged already (created and
        in the call bridge since the offer), so winning costs one UPDATE and one dial:
        the agent's first RTP packet is mixed to the caller, never dropped while an
        addChannel is still in flight. The phone starts ringing before the transaction
        commits; a dial that fails rolls the accept back and the card stays on offer.
        """
        moving = next((c for c in self.calls.values()
                       if c.transfer is not None and c.transfer.handoff_id == handoff_id), None)
        if moving is not None:
            await self._accept_transfer(moving, handoff_id, agent_id)
            return
        live = next((c for c in self.calls.values() if c.handoff_id == handoff_id), None)
        if live is None:
            # Not a handoff of a live call here: let the store say why (taken, withdrawn).
            async with self.store.transaction() as tx:
                await tx.handoffs.accept(handoff_id, agent_id)
                raise CallStateConflict("?", CallState.ENDED, "the call is no longer live")
        async with live.lock:
            async with self.store.transaction() as tx:
                handoff = await tx.handoffs.accept(handoff_id, agent_id)
                staged = live.staged.pop(agent_id, None)
                if staged is None:
                    agent = await tx.agents.get(agent_id)
                    kind = str(agent.endpoint_kind)
                else:
                    leg, kind = staged
                try:
                    if staged is None:
                        leg = await self._create_agent_leg(live, agent.sip_user)
                    await self._dial_agent(live, leg, agent_id)
                except AriError as exc:
                    raise AgentUnreachable(agent_id, str(exc)) from exc
                live.agent, live.agent_id, live.agent_kind = leg, agent_id, kind
                live.agent_answered = False
                live.answered.clear()
                await tx.handoffs.apply(handoff.id, HandoffEvent.DIAL_AGENT)
                # Known to the ledger while it rings, so a restarted controller finds it.
                await tx.calls.set_legs(live.call_id, agent_channel_id=leg)
            await self._unstage(live)
        self.hub.publish("cards", {"type": "taken", "handoff_id": handoff_id,
                                   "agent_id": agent_id})

    async def _dial_agent(self, live: LiveCall, leg: str, agent_id: int) -> None:
        """Ring an agent leg that is already in the call bridge; a leg that cannot ring
        is hung up, so a failed accept leaves nothing behind in the bridge."""
        try:
            await self.ari.channels.dial(leg, caller=live.caller,
                                         timeout=self.timing.ring_timeout_s)
        except AriError as exc:
            log.warning("call=%s: agent %s's leg %s could not be dialled: %s",
                        live.call_id, agent_id, leg, exc)
            await self._hangup(leg)
            raise

    async def _create_agent_leg(self, live: LiveCall, sip_user: str) -> str:
        """A new agent leg in the call bridge, not dialled yet (lock held)."""
        leg = live.new_leg_id("agent")
        try:
            await self.ari.channels.create(
                f"PJSIP/{sip_user}", self.app, app_args=["agent", live.call_id],
                channel_id=leg, originator=live.caller,
            )
            await self._bridge_add(live.bridge, leg)
        except AriError:
            await self._hangup(leg)
            raise
        return leg

    async def _agent_gone(self, live: LiveCall, cause: int) -> None:
        async with live.lock:
            if live.ending:
                return
            # Before the move completed, losing the agent is a failed attempt, not a
            # call the agent had; a move still waiting for its overlap stops here.
            answered, picked_up = live.connected, live.agent_answered
            hung_up = live.agent in live.hung_up_by_phone
            live.agent = None
            live.agent_answered = live.connected = False
            handoff_id = live.handoff_id
            if not answered:
                # The AI never left. An agent who picked up and was gone at once (a tab
                # closed as the call arrived) vanished; other legs never answered.
                reason = FailureReason.AGENT_VANISHED if picked_up else _unanswered(cause)
                if handoff_id is not None:
                    async with self.store.transaction() as tx:
                        await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL,
                                                failure_reason=reason)
                log.info("call=%s: agent leg ended before the move (%s); re-offering",
                         live.call_id, reason)
                if picked_up:
                    # The caller heard the agent for a moment: the AI says what happened.
                    self._tell_ai_agent_vanished(live)
                self._spawn(self._reoffer(live, handoff_id), f"reoffer {handoff_id}")
                return
            if hung_up:
                # The agent put the phone down (a desk phone's handset, a softphone's
                # hang-up): they ended the call, as End call on the desk does.
                live.ending = True
        if live.ending:
            await self.end_call(live.call_id, CallOutcome.COMPLETED_BY_AGENT)
            return
        # The agent's browser or network vanished mid-call: the caller goes back to the
        # AI, which apologises, and the call is offered again with higher priority.
        await self._back_to_ai(live, HandoffEvent.FAIL, FailureReason.AGENT_VANISHED)
        # The AI is back with the caller: it apologises, and the call is offered again.
        self._tell_ai_agent_vanished(live)
        self._spawn(self._reoffer(live, handoff_id), f"reoffer {handoff_id}")

    def _tell_ai_agent_vanished(self, live: LiveCall) -> None:
        self.hub.publish(f"assistant:{live.assistant}",
                         {"type": "handoff_failed", "call_id": live.call_id,
                          "reason": FailureReason.AGENT_VANISHED.value})

    async def _reoffer(self, live: LiveCall, previous: int | None) -> None:
        if live.ending or previous is None:
            return
        async with self.store.transaction() as tx:
            old = await tx.handoffs.get(previous)
            if live.handoff_id == previous:
                live.handoff_id = None
        await self.request_handoff(
            live.call_id, reason=old.reason, summary=old.summary or "", topic=old.topic,
            priority=reoffer_level(old.priority), attempt=old.attempt + 1,
        )

    # ---- transfer -----------------------------------------------------------------------

    async def transfer(self, call_id: str, from_agent: int, to_agent: int, note: str) -> int:
        """Offer the call to one named colleague (a targeted card carrying `note`).

        The first agent stays with the caller while the card is on offer and while the
        colleague's phone rings: the caller is never left alone with hold music. When
        the colleague answers, their leg is already in the call bridge, so the switch is
        the first agent's leg leaving it. Returns the new handoff's id.
        """
        live = self._live(call_id)
        await self.settled(live)
        async with live.lock:
            async with self.store.transaction() as tx:
                call = await tx.calls.get(call_id)
                if not live.connected or live.agent_id != from_agent \
                        or call.state is not CallState.WITH_AGENT:
                    raise CallStateConflict(call_id, call.state,
                                            f"agent {from_agent} is not talking to the caller")
                if live.transfer is not None:
                    raise CallStateConflict(call_id, call.state, "a transfer is already on offer")
                if to_agent == from_agent or to_agent not in {
                        a.id for a in await tx.agents.available()}:
                    raise AgentNotAvailable(to_agent)
                current = await tx.handoffs.get(live.handoff_id) if live.handoff_id else None
                handoff = await tx.handoffs.request(
                    call_id, reason="transfer", note=note or None, target_agent_id=to_agent,
                    summary=current.summary if current else None,
                    topic=current.topic if current else None,
                    priority=current.priority if current else 0,
                )
                await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)
                assistant = await tx.assistants.by_name(live.assistant)
            live.transfer = Transfer(handoff.id, to_agent)
        timeout = accept_timeout_s(assistant)
        self.hub.publish("cards", {"type": "offered", "call_id": call_id,
                                   "handoff_id": handoff.id})
        self._spawn(self._transfer_timeout(live, handoff.id, timeout),
                    f"transfer timeout {handoff.id}")
        self.call_changed(call_id)
        log.info("call=%s: agent %s transfers to agent %s (handoff %s)",
                 call_id, from_agent, to_agent, handoff.id)
        return handoff.id

    async def _accept_transfer(self, live: LiveCall, handoff_id: int, agent_id: int) -> None:
        async with live.lock:
            transfer = live.transfer
            async with self.store.transaction() as tx:
                # The store judges the race (taken, withdrawn, someone else's card).
                await tx.handoffs.accept(handoff_id, agent_id)
                if transfer is None or transfer.handoff_id != handoff_id or live.ending:
                    raise CallStateConflict(live.call_id, CallState.WITH_AGENT,
                                            "the transfer was cancelled")
                agent = await tx.agents.get(agent_id)
                try:
                    leg = await self._create_agent_leg(live, agent.sip_user)
                    await self._dial_agent(live, leg, agent_id)
                except AriError as exc:
                    raise AgentUnreachable(agent_id, str(exc)) from exc
                transfer.leg, transfer.kind = leg, str(agent.endpoint_kind)
                await tx.handoffs.apply(handoff_id, HandoffEvent.DIAL_AGENT)
        self.hub.publish("cards", {"type": "taken", "handoff_id": handoff_id,
                                   "agent_id": agent_id})
        self.call_changed(live.call_id)

    async def _complete_transfer(self, live: LiveCall) -> None:
        """The colleague answered: their leg takes the call, the first agent's leaves
        (once the colleague's voice flows: both agents are heard for a moment, never
        neither)."""
        if live.transfer is not None and live.transfer.leg is not None:
            await self._until_media_from(live.transfer.leg)
        async with live.lock:
            transfer = live.transfer
            if transfer is None or transfer.leg is None or live.closed or live.caller_leaving:
                return
            live.transfer = None
            old_leg, old_handoff = live.agent, live.handoff_id
            self.wrap_up(live.agent_id)
            live.agent, live.agent_id, live.agent_kind = (transfer.leg, transfer.to_agent,
                                                          transfer.kind)
            live.handoff_id = transfer.handoff_id
            live.agent_answered = live.connected = True
            live.answered.set()
            async with self.store.transaction() as tx:
                if old_handoff is not None:
                    await tx.handoffs.apply(old_handoff, HandoffEvent.END)
                await tx.handoffs.apply(transfer.handoff_id, HandoffEvent.AGENT_ANSWERED)
                await tx.calls.apply(live.call_id, CallEvent.AGENT_CONNECTED,
                                     agent_channel_id=transfer.leg)
            # No longer live.agent, so its StasisEnd is not mistaken for a lost agent.
            if old_leg:
                await self._hangup(old_leg)
        # The colleague's panel fills, and the first agent's desk is free for cards.
        self.call_changed(live.call_id)
        log.info("call=%s transferred to agent %s via %s", live.call_id, transfer.to_agent,
                 transfer.leg)

    async def _transfer_failed(self, live: LiveCall, cause: int) -> None:
        """The colleague's phone did not answer: the first agent simply keeps the caller."""
        async with live.lock:
            transfer, live.transfer = live.transfer, None
            if transfer is None or live.ending:
                return
            async with self.store.transaction() as tx:
                await tx.handoffs.apply(transfer.handoff_id, HandoffEvent.FAIL,
                                        failure_reason=_unanswered(cause))
        self.call_changed(live.call_id)
        log.info("call=%s: transfer %s failed (cause %s); the first agent keeps the call",
                 live.call_id, transfer.handoff_id, cause)

    async def _transfer_timeout(self, live: LiveCall, handoff_id: int, timeout: float) -> None:
        await asyncio.sleep(timeout)
        async with live.lock:
            transfer = live.transfer
            if transfer is None or transfer.handoff_id != handoff_id or transfer.leg:
                return
            live.transfer = None
            async with self.store.transaction() as tx:
                await tx.handoffs.apply(handoff_id, HandoffEvent.TIME_OUT)
        self.hub.publish("cards", {"type": "withdrawn", "handoff_id": handoff_id,
                                   "reason": FailureReason.TIMEOUT.value})
        self.call_changed(live.call_id)

    async def _cancel_transfer(self, live: LiveCall) -> None:
        """The first agent is leaving (back to the AI, or gone): a pending transfer of
        their call makes no sense any more (lock held)."""
        transfer, live.transfer = live.transfer, None
        if transfer is None:
            return
        if transfer.leg:
            await self._hangup(transfer.leg)
        async with self.store.transaction() as tx:
            await tx.handoffs.apply(transfer.handoff_id, HandoffEvent.FAIL,
                                    failure_reason=FailureReason.CANCELLED)
        self.hub.publish("cards", {"type": "withdrawn", "handoff_id": transfer.handoff_id,
                                   "reason": FailureReason.CANCELLED.value})

    async def return_to_ai(self, call_id: str) -> None:
        """The agent hands the caller back to the AI (raises CallStateConflict if no
        agent has the call)."""
        live = self._live(call_id)
        await self.settled(live)
        await self._back_to_ai(live, HandoffEvent.RETURN_TO_AI, None)
        self.hub.publish(f"assistant:{live.assistant}",
                         {"type": "returned_to_ai", "call_id": call_id})

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
                    await self._join_ai(live, self.engines[live.assistant])
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
                    await self._hold(live)
                if event is HandoffEvent.RETURN_TO_AI and live.ai is not None:
                    # The agent stays until the AI's first words (an engine needs a
                    # moment to start talking on a new connection).
                    await self._until_voice_from(live.ai)
            await self._cancel_transfer(live)
            agent, live.agent = live.agent, None
            if event is HandoffEvent.RETURN_TO_AI:
                self.wrap_up(live.agent_id)
            live.agent_answered = live.connected = False
            if agent:
                await self._hangup(agent)
            handoff_id, live.handoff_id = live.handoff_id, None
            async with self.store.transaction() as tx:
                if handoff_id is not None:
                    await tx.handoffs.apply(handoff_id, event, failure_reason=reason)
                call_event = (CallEvent.RETURN_TO_AI if event is HandoffEvent.RETURN_TO_AI
                              else CallEvent.AGENT_LOST)
                await tx.calls.apply(live.call_id, call_event, ai_channel_id=live.ai,
                                     agent_channel_id=None)
        self.call_changed(live.call_id)

    # ---- the end of a call ---------------------------------------------------------------

    async def end_call(self, call_id: str, outcome: CallOutcome | None = None) -> None:
        """Hang up the caller; the hang-up that follows records `outcome`, or else the
        one the call's state implies."""
        live = self._live(call_id)
        live.ending = True
        live.outcome = outcome or live.outcome
        await self._hangup(live.caller)

    async def _caller_gone(self, live: LiveCall, cause: int) -> None:
        async with live.lock:
            if live.closed:
                return
            live.ending = live.closed = True
            await self._unstage(live)
            # The transfer's handoff is closed with the others below; only its leg goes.
            moving, live.transfer = live.transfer, None
            for leg in (live.agent, live.ai, live.forward, moving.leg if moving else None):
                if leg:
                    await self._hangup(leg)
            with contextlib.suppress(AriNotFound):
                await self.ari.bridges.destroy(live.bridge)
            talked_to: list[int | None] = []  # agents whose part of the call ends here
            async with self.store.transaction() as tx:
                call = await tx.calls.get(live.call_id)
                open_handoffs = await tx.handoffs.open_for_call(live.call_id)
                for handoff in open_handoffs:
                    if live.pbx_hangup:
                        await tx.handoffs.apply(handoff.id, HandoffEvent.FAIL,
                                                failure_reason=FailureReason.PBX_RESTART)
                        continue
                    event = (HandoffEvent.CALLER_HUNG_UP if handoff.state is not
                             HandoffState.CONNECTED else HandoffEvent.END)
                    if event is HandoffEvent.END:
                        talked_to.append(handoff.accepted_by)
                    await tx.handoffs.apply(handoff.id, event)
                outcome = (
                    CallOutcome.PBX_RESTART if live.pbx_hangup
                    else live.outcome if live.outcome is not None
                    else CallOutcome.FALLBACK_NUMBER if call.state is CallState.FORWARDED
                    else CallOutcome.COMPLETED_BY_AGENT if call.state is CallState.WITH_AGENT
                    else CallOutcome.ABANDONED if open_handoffs
                    else CallOutcome.CALLBACK_REQUESTED if live.callback_requested
                    else CallOutcome.COMPLETED_BY_AI
                )
                end_cause = f"hung up by the PBX (cause {cause})" if live.pbx_hangup else str(cause)
                await tx.calls.close(live.call_id, outcome, end_cause=end_cause)
                if live.recording:
                    await tx.calls.set_recording(live.call_id, self._keep_recording(live))
        for agent_id in talked_to:
            self.wrap_up(agent_id)
        self.calls.pop(live.call_id, None)
        self._by_caller.pop(live.caller, None)
        self.hub.publish("cards", {"type": "call_ended", "call_id": live.call_id})
        self.hub.publish(f"assistant:{live.assistant}",
                         {"type": "call_ended", "call_id": live.call_id})
        log.info("call=%s ended (cause %s)", live.call_id, cause)

    def _keep_recording(self, live: LiveCall) -> str:
        return keep_recording(f"{live.recording}.wav", self.host_path, self.recordings)

    # ---- reconciliation ------------------------------------------------------------------

    def leave_alone(
        self, owned: Callable[[], Iterable[str]],
        adopt: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`owned()` names channels and bridges that are not calls' but are in use;
        `adopt()`, run at the start of every reconciliation, lets their owner take up
        what it had before a restart or a lost event socket."""
        self._other_owners.append(owned)
        if adopt is not None:
            self._other_adopters.append(adopt)

    async def reconcile(self) -> None:
        """Match the ledger with what Asterisk reports; run after every (re)connect.

        Asterisk does not queue events while nobody listens, and channels stay parked in
        Stasis, so after a controller restart or a lost event socket the truth is in
        Asterisk: calls whose caller is still there are adopted (the AI rejoins if its
        leg went with the old controller), calls whose caller is gone are closed with an
        outcome, and legs or bridges that belong to no open call are removed.
        """
        for adopt in self._other_adopters:
            await adopt()
        app = await self.ari.applications.get(self.app)
        live_channels = set(app["channel_ids"])
        live_bridges = set(app["bridge_ids"])
        info = await self.ari.asterisk.info()
        pbx_started = _parse_time(str(info.get("status", {}).get("startup_time", "")))
        async with self.store.transaction() as tx:
            # Call-backs (outbound) are the Callbacks' to reconcile.
            open_calls = list(await tx.calls.open_calls(CallDirection.INBOUND))
            names = {a.id: a.name for a in await tx.assistants.all()}
        kept: set[str] = set()
        for row in open_calls:
            if row.caller_channel_id in live_channels:
                live = await self._adopt(row, names.get(row.assistant_id or -1, ""),
                                         live_channels)
                kept |= _legs_of(live)
            else:
                restarted = pbx_started is not None and pbx_started > row.started_at
                await self._close_lost(row.id, restarted)
        for owned in self._other_owners:
            kept |= set(owned())
        for channel in live_channels - kept:
            log.warning("reconcile: hanging up %s, which belongs to no open call", channel)
            await self._hangup(channel)
        for bridge in live_bridges - kept:
            log.warning("reconcile: destroying bridge %s, which belongs to no open call", bridge)
            with contextlib.suppress(AriNotFound):
                await self.ari.bridges.destroy(bridge)
        log.info("reconciled: %d calls adopted, %d closed",
                 len(self.calls), len(open_calls) - len(self.calls))

    async def _adopt(self, row: Any, assistant: str, live_channels: set[str]) -> LiveCall:
        live = self.calls.get(row.id)
        if live is None:
            live = LiveCall(row.id, assistant, row.caller_channel_id,
                            row.bridge_id or f"{row.caller_channel_id}{SEP}bridge",
                            row.caller_number, recording=f"call-{row.id}")
            self.calls[live.call_id] = live
            self._by_caller[live.caller] = live
        async with live.lock:
            live.ai = row.ai_channel_id if row.ai_channel_id in live_channels else None
            live.agent = row.agent_channel_id if row.agent_channel_id in live_channels else None
            async with self.store.transaction() as tx:
                handoffs = list(await tx.handoffs.open_for_call(row.id))
                cancelled = await self._cancel_interrupted_transfer(tx, handoffs)
                handoffs = [h for h in handoffs if h.id not in cancelled]
                current = handoffs[-1] if handoffs else None
                if current is not None and current.accepted_by is not None:
                    agent = await tx.agents.get(current.accepted_by)
                    live.agent_id, live.agent_kind = agent.id, str(agent.endpoint_kind)
                notes = await tx.notes.for_call(row.id)
            live.callback_requested = any(n.text.startswith(CALLBACK_NOTE) for n in notes)
            if current is not None:
                live.handoff_id = current.id
                await self._resume_handoff(live, current)
            needs_ai = live.agent is None and live.ai is None
            engine = self.engines.get(assistant)
        for handoff_id in cancelled:
            self.hub.publish("cards", {"type": "withdrawn", "handoff_id": handoff_id,
                                       "reason": FailureReason.CANCELLED.value})
        lost: int | None = None
        if needs_ai and engine is not None:
            # The AI engine went down with the old controller; the caller gets it back.
            async with live.lock:
                try:
                    await self._join_ai(live, engine)
                except AriError as exc:
                    log.warning("call=%s: the AI could not rejoin: %s", live.call_id, exc)
                    self._spawn(self._ai_lost(live), f"AI lost call={live.call_id}")
                async with self.store.transaction() as tx:
                    if row.state is CallState.WITH_AGENT:
                        # ...and the agent's leg went too: as when it vanishes mid-call,
                        # the attempt failed and the call is offered again.
                        await tx.calls.apply(live.call_id, CallEvent.AGENT_LOST,
                                             ai_channel_id=live.ai, agent_channel_id=None)
                        if current is not None and current.state is HandoffState.CONNECTED:
                            await tx.handoffs.apply(current.id, HandoffEvent.FAIL,
                                                    failure_reason=FailureReason.AGENT_VANISHED)
                            lost = current.id
                            live.agent_answered = live.connected = False
                            live.agent_id = None
                    else:
                        await tx.calls.set_legs(live.call_id, ai_channel_id=live.ai)
        if lost is not None:
            self._spawn(self._reoffer(live, lost), f"reoffer call={live.call_id}")
        log.info("call=%s adopted (caller %s, ai %s, agent %s)",
                 live.call_id, live.caller, live.ai, live.agent)
        return live

    @staticmethod
    async def _cancel_interrupted_transfer(tx: Any, handoffs: list[Any]) -> list[int]:
        """A transfer under way when the previous controller stopped is cancelled: the
        agent who has the caller keeps them (the colleague's card goes; a leg of theirs
        already ringing is removed as a leftover). Returns the cancelled handoffs' ids."""
        connected = [h for h in handoffs if h.state is HandoffState.CONNECTED]
        if not connected:
            return []
        cancelled = [h.id for h in handoffs if h.id > connected[-1].id]
        for handoff_id in cancelled:
            await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL,
                                    failure_reason=FailureReason.CANCELLED)
        return cancelled

    async def _resume_handoff(self, live: LiveCall, handoff: Handoff) -> None:
        """Pick up a handoff where the previous controller left it (lock held)."""
        state = handoff.state
        if state is HandoffState.CONNECTED:
            live.agent_answered = live.connected = True
            live.answered.set()
        elif state in (HandoffState.ACCEPTED, HandoffState.CONNECTING):
            if live.agent is None:
                # The agent leg was never dialled or is gone: offer the call again.
                assert live.handoff_id is not None
                async with self.store.transaction() as tx:
                    await tx.handoffs.apply(live.handoff_id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.AGENT_LEG_FAILED)
                self._spawn(self._reoffer(live, live.handoff_id), "reoffer after restart")
            elif (await self.ari.channels.get(live.agent))["state"] == "Up":
                # The agent answered while nobody listened: finish the move now.
                live.agent_answered = True
                live.answered.set()
                await self._agent_connected(live)
            # else: it still rings; its ChannelStateChange or hang-up will come.
        elif state is HandoffState.OFFERED:
            assert live.handoff_id is not None
            # The offer's clock goes on: the caller has been waiting since it was made.
            async with self.store.transaction() as tx:
                timeout = accept_timeout_s(await tx.assistants.by_name(live.assistant))
            waited = (utc_now() - (handoff.offered_at or handoff.requested_at)).total_seconds()
            self._spawn(self._offer_timeout(live, live.handoff_id, max(0.0, timeout - waited)),
                        "offer timeout")

    async def _close_lost(self, call_id: str, pbx_restarted: bool) -> None:
        """The caller left while we were not listening: record how the call ended."""
        async with self.store.transaction() as tx:
            call = await tx.calls.get(call_id)
            for handoff in await tx.handoffs.open_for_call(call_id):
                if pbx_restarted:
                    await tx.handoffs.apply(handoff.id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.PBX_RESTART)
                else:
                    await tx.handoffs.apply(handoff.id, HandoffEvent.CALLER_HUNG_UP)
            outcome = (
                CallOutcome.PBX_RESTART if pbx_restarted
                else CallOutcome.COMPLETED_BY_AGENT if call.state is CallState.WITH_AGENT
                else CallOutcome.COMPLETED_BY_AI
            )
            await tx.calls.close(call_id, outcome, end_cause="pbx_restart" if pbx_restarted
                                 else "ended while the controller was away")
        live = self.calls.pop(call_id, None)
        if live is not None:
            self._by_caller.pop(live.caller, None)
            self.hub.publish(f"assistant:{live.assistant}",
                             {"type": "call_ended", "call_id": call_id})
        self.hub.publish("cards", {"type": "call_ended", "call_id": call_id})
        log.info("call=%s closed on reconcile (%s)", call_id,
                 "Asterisk restarted" if pbx_restarted else "caller gone")

    # ---- helpers -------------------------------------------------------------------------

    def _live(self, call_id: str) -> LiveCall:
        live = self.calls.get(call_id)
        if live is None:
            raise NotFound("call", call_id)
        return live

    async def _bridge_add(self, bridge_id: str, channel_id: str) -> None:
        await add_when_in_stasis(self.ari, bridge_id, channel_id)

    async def _hangup(self, channel_id: str) -> None:
        with contextlib.suppress(AriNotFound):
            await self.ari.channels.hangup(channel_id)


def _legs_of(live: LiveCall) -> set[str]:
    """Every channel and bridge of a live call, including legs staged, ringing a
    colleague for a transfer, or forwarding to the fallback number."""
    legs = {live.caller, live.ai, live.agent, live.forward, live.bridge,
            *(leg for leg, _ in live.staged.values()),
            live.transfer.leg if live.transfer else None}
    return {leg for leg in legs if leg}
