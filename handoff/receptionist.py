"""The reference receptionist: the built-in AI engine that needs no cloud and no model.

It greets with prompts spoken by espeak-ng (made once at set-up), listens for DTMF and
treats 0 as "a person, please", and acts on the server's answer as an engine should: an
AI-only assistant's refusal is said to the caller, an AI-first one's asks the caller to
confirm (a keypad cannot say what the call is about). It works exactly like an
external AI engine: its audio arrives over AudioSocket, it learns about calls from the
control API's events WebSocket, and it talks to Switchboard only through that HTTP API
with the assistant's token. So it doubles as the living example of the contract in
``web/openapi/ai_control.json``.

One receptionist serves every assistant whose engine is the built-in one: it holds each
one's token (a *seat*: :meth:`Receptionist.serve`) and follows each one's events socket,
and answers every call with the token of the assistant that announced it.

Which streams it serves: any AudioSocket connection whose call id was announced to one
of its assistants (``ready`` or ``call_started``). Asterisk usually connects the AI leg before
the controller announces the call, so an unknown stream waits a short grace for its
announcement and is refused if none comes: a stray connection never hears a prompt or
gets to post into someone's transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from handoff.events import EventType, Fallback
from handoff.policy import Refusal
from handoff.prompts import speak
from pbx.audiosocket import AudioSocketServer, AudioSocketSession, Kind

log = logging.getLogger(__name__)

PROMPTS = {
    "greeting": (
        "Hello, you have reached the Switchboard demo. I am the virtual receptionist. "
        "Press zero at any time to speak with a person."
    ),
    # The call came outside the assistant's business hours (call_started's out_of_hours):
    # its fallback already applies, so no person is promised.
    "closed": (
        "Hello, you have reached the Switchboard demo. We are closed right now. "
        "We have noted your call, and someone will get back to you."
    ),
    "connecting": "Of course. Please stay on the line, I am connecting you to a person.",
    "back": "You are back with the virtual receptionist. How else can I help?",
    "apology": (
        "I am sorry, the person you were speaking with was disconnected. "
        "I am back with you, and I am finding someone else."
    ),
    "nobody": (
        "I am sorry, nobody is available right now. "
        "We have noted your number and will call you back."
    ),
    # The assistant is AI only: its handoff requests are refused (handoff_not_allowed).
    "unavailable": (
        "I am sorry, a person is not available on this line. "
        "I will do my best to help you myself."
    ),
    # The assistant is AI first (problem_required): a keypad cannot say what the call is
    # about, so the caller is asked to confirm instead, and the next 0 says so.
    "ask_first": (
        "A person helps best when they know what your call is about, and I can only hear "
        "your keys. Press zero again and I will connect you anyway."
    ),
}

# handoff_failed reasons after which nobody will come: the caller is told so. Any other
# failure (an agent's leg dropped) is followed by a new offer, so the AI apologises.
_NOBODY_REASONS = frozenset({"timed_out", "timeout", "no_agents"})
_PERSON_DIGIT = "0"
# What the keypad receptionist can tell an AI-first assistant's policy once the caller
# has pressed 0 a second time after being asked: that they insist, and why nothing more.
_INSISTS = ("The caller pressed 0 again after being asked what the call is about: they "
            "want a person, and the keypad receptionist cannot ask them more.")
# The seat of a receptionist built for one assistant (its token given at construction).
SOLE_SEAT = "assistant"


async def _settle(call_id: str, task: asyncio.Task[None] | None) -> None:
    """Stop a prompt (if still playing) and collect its outcome, so a failure is logged
    instead of vanishing with the task."""
    if task is None:
        return
    task.cancel()
    (result,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(result, Exception):
        log.warning("call=%s: prompt failed: %r", call_id, result)


def make_prompts(
    folder: Path, voice: str = "en-us", texts: Mapping[str, str] = PROMPTS
) -> dict[str, Path]:
    """The receptionist's prompts (``texts``: another voice of the demo may ask for its
    own), spoken once into ``folder`` (handoff.prompts.speak)."""
    return speak(folder, texts, voice)


@dataclass
class _Seat:
    """One assistant the receptionist answers for: its token and its events stream."""

    assistant: str
    token: str
    http: aiohttp.ClientSession
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass
class _Call:
    """What the receptionist knows of one call across its AudioSocket sessions."""

    call_id: str
    # The assistant that announced the call: its token is the one the call's requests use.
    seat: _Seat | None = None
    announced: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: int = 0
    session: AudioSocketSession | None = None
    speaking: asyncio.Task[None] | None = None
    # Said on the next AudioSocket session: the AI leg was out of the bridge when the
    # event that asks for it arrived (e.g. it is rejoining after a person had the call).
    pending: str | None = None
    # Bumped by every handoff outcome, so a "connecting" that would come after the
    # outcome (the event can overtake the HTTP answer) is not said.
    handoff_news: int = 0
    out_of_hours: bool = False
    # An AI-first assistant refused the first 0 and the caller was asked to confirm.
    asked_first: bool = False


@dataclass
class Receptionist:
    """One engine: an AudioSocket listener, an events WebSocket, a control-API client."""

    api_base: str  # e.g. http://127.0.0.1:8080/api/ai/v1
    # Built for one assistant (a test's): its token, seated at start. Inside Switchboard
    # it is empty and the product seats each built-in assistant with serve().
    token: str
    prompts: dict[str, bytes]
    host: str = "127.0.0.1"
    port: int = 0
    # How long a stream waits for its call to be announced on the events stream.
    grace_s: float = 3.0
    # How long a prompt waits for the first audio of the call (the leg in the bridge)
    # before it is said anyway.
    hear_within_s: float = 3.0
    # How the API's certificate is checked when it is served over https (True: the
    # system's trust store; inside Switchboard: our own certificate, pinned).
    ssl: aiohttp.Fingerprint | bool = True
    audio: AudioSocketServer = field(init=False)
    _seats: dict[str, _Seat] = field(default_factory=dict, init=False)
    _calls: dict[str, _Call] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.audio = AudioSocketServer(self.host, self.port, any_stream=self._serve)

    @classmethod
    def from_folder(
        cls, api_base: str, token: str, folder: Path, **options: Any
    ) -> Receptionist:
        """Blocking (espeak-ng on first use): call it at set-up, or via ``to_thread``."""
        prompts = {name: path.read_bytes() for name, path in make_prompts(folder).items()}
        return cls(api_base=api_base, token=token, prompts=prompts, **options)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for audio and start following the events stream.

        Does not wait for the API: inside Switchboard the receptionist starts before the
        web server listens. :meth:`wait_ready` waits for every seat's first ``ready``.
        """
        await self.audio.start()
        if self.token:
            await self.serve(SOLE_SEAT, self.token)

    async def serve(self, assistant: str, token: str) -> None:
        """Answer ``assistant``'s calls with ``token`` (a new token replaces the old one:
        its events stream is opened again with it)."""
        seat = self._seats.get(assistant)
        if seat is not None and seat.token == token:
            return
        await self.release(assistant)
        seat = _Seat(assistant, token, aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(ssl=self.ssl)))
        seat.task = asyncio.create_task(self._follow_events(seat),
                                        name=f"receptionist events {assistant}")
        self._seats[assistant] = seat
        log.info("receptionist: answering for assistant %s", assistant)

    async def release(self, assistant: str) -> None:
        """Stop answering for ``assistant`` (re-pointed at another engine, or removed)."""
        seat = self._seats.pop(assistant, None)
        if seat is None:
            return
        if seat.task is not None:
            seat.task.cancel()
            await asyncio.gather(seat.task, return_exceptions=True)
        await seat.http.close()
        log.info("receptionist: no longer answering for assistant %s", assistant)

    @property
    def tokens(self) -> dict[str, str]:
        """The token it holds for each assistant it answers for."""
        return {name: seat.token for name, seat in self._seats.items()}

    async def wait_ready(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            for seat in list(self._seats.values()):
                await seat.ready.wait()

    async def close(self) -> None:
        for assistant in list(self._seats):
            await self.release(assistant)
        await self.audio.close()

    @property
    def address(self) -> str:
        return self.audio.address

    def expect_call(self, call_id: str) -> None:
        """Nothing to do: like any external engine, the receptionist learns of calls from
        the events stream (kept for the controller's AiEngine interface)."""

    # ---- events ----------------------------------------------------------------------------

    async def _follow_events(self, seat: _Seat) -> None:
        """A supervised loop: reconnect with backoff; each (re)connect starts with
        ``ready``, which lists the live calls, so nothing is lost across an outage."""
        delay, down = 0.2, False
        while True:
            try:
                async with seat.http.ws_connect(f"{self.api_base}/events",
                                                heartbeat=30.0) as ws:
                    if down:
                        log.info("receptionist: %s's events stream is back", seat.assistant)
                    delay, down = 0.2, False
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            await self._on_message(seat, message.data)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                if not down:
                    log.warning("receptionist: %s's events stream lost (%s); retrying",
                                seat.assistant, exc)
                down = True
            else:
                if not down:
                    log.warning("receptionist: %s's events stream closed by the server; "
                                "retrying", seat.assistant)
                down = True
            seat.ready.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _on_message(self, seat: _Seat, data: str) -> None:
        # One bad event is logged and skipped; the stream goes on for the other calls.
        try:
            await self._on_event(seat, json.loads(data))
        except Exception:
            log.exception("receptionist: event %.200s not handled", data)

    async def _on_event(self, seat: _Seat, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == EventType.READY:
            for call_id in event.get("calls", []):
                self._announced(seat, str(call_id))
            seat.ready.set()
            return
        if kind == EventType.OVERFLOW:
            log.warning("receptionist: %s events were lost", event.get("dropped"))
            return
        call_id = str(event.get("call_id", ""))
        if kind == EventType.CALL_STARTED:
            self._call(call_id).out_of_hours = bool(event.get("out_of_hours"))
            self._announced(seat, call_id)
        elif kind == EventType.CALL_ENDED:
            ended = self._calls.pop(call_id, None)
            if ended is not None:
                await self._hush(ended)
        elif kind == EventType.RETURNED_TO_AI:
            log.info("call=%s back with the receptionist (%d lines with the person)",
                     call_id, len(event.get("transcript") or []))
            self._prompt(call_id, "back")
        elif kind == EventType.HANDOFF_FAILED:
            self._handoff_news(call_id)
            reason = str(event.get("reason", ""))
            if event.get("fallback") == Fallback.NUMBER:
                # The caller is being put through to the assistant's fallback number.
                self._prompt(call_id, "connecting")
            else:
                self._prompt(call_id, "nobody" if reason in _NOBODY_REASONS else "apology")
        elif kind == EventType.HANDOFF_CONNECTED:
            # The AI leg has left the bridge; whatever it was going to say is moot.
            call = self._handoff_news(call_id)
            if call is not None:
                call.pending = None

    def _announced(self, seat: _Seat, call_id: str) -> None:
        call = self._call(call_id)
        call.seat = seat
        call.announced.set()

    def _call(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call(call_id)
        return call

    def _handoff_news(self, call_id: str) -> _Call | None:
        call = self._calls.get(call_id)
        if call is not None:
            call.handoff_news += 1
        return call

    def _prompt(self, call_id: str, name: str) -> None:
        """Say ``name`` now if the AI leg is in the call, else as soon as it rejoins."""
        call = self._calls.get(call_id)
        if call is None:
            return
        if call.session is not None and not call.session.closed.is_set():
            self._speak(call, name)
        else:
            call.pending = name

    # ---- audio -----------------------------------------------------------------------------

    async def _serve(self, session: AudioSocketSession) -> None:
        call_id = str(session.stream_id)
        call = self._call(call_id)
        try:
            await asyncio.wait_for(call.announced.wait(), self.grace_s)
        except TimeoutError:
            log.warning("call=%s: AudioSocket stream never announced; refused", call_id)
            if not call.announced.is_set() and call.session is None:
                self._calls.pop(call_id, None)
            return
        call.sessions += 1
        call.session = session
        first = call.sessions == 1
        # The first stream of a call is the greeting; a later one is the AI rejoining
        # after a person had the call, and the event that says why picks the words.
        greeting = "closed" if call.out_of_hours else "greeting"
        prompt, call.pending = (greeting if first else call.pending), None
        if prompt is not None:
            self._speak(call, prompt)
        try:
            async for frame in session.frames():
                if frame.kind == Kind.DTMF:
                    await self._on_digit(call, frame.payload.decode(errors="replace"))
        except ConnectionError:
            # Asterisk resets the TCP connection when it hangs up the AI leg (the caller
            # left, or a person took over): the normal end of this stream.
            log.debug("call=%s: AudioSocket stream reset by Asterisk", call_id)
        finally:
            if call.session is session:
                call.session = None
                await self._hush(call)

    async def _on_digit(self, call: _Call, digit: str) -> None:
        await self._post(call.call_id, "transcript",
                         {"speaker": "caller", "text": f"[pressed {digit}]"})
        if digit != _PERSON_DIGIT:
            return
        await self._hush(call)
        news = call.handoff_news
        ask = {"reason": "caller_asked",
               "summary": "The caller pressed 0 to speak with a person."}
        if call.asked_first:
            ask["problem"] = _INSISTS
        status, code = await self._ask(call.call_id, "handoff", ask)
        if status == 202 and call.handoff_news == news:
            self._speak(call, "connecting")
        elif code == Refusal.NOT_ALLOWED:
            self._speak(call, "unavailable")
        elif code == Refusal.OUT_OF_HOURS:
            self._speak(call, "closed")
        elif code == Refusal.PROBLEM_REQUIRED:
            call.asked_first = True
            self._speak(call, "ask_first")

    def _speak(self, call: _Call, name: str) -> None:
        """Start saying a prompt, cutting off the one in progress (one voice per call)."""
        previous = call.speaking
        call.speaking = asyncio.create_task(
            self._say(call, name, previous), name=f"say {name} call={call.call_id}"
        )

    async def _say(self, call: _Call, name: str, previous: asyncio.Task[None] | None) -> None:
        await _settle(call.call_id, previous)
        session = call.session
        if session is None:
            return
        # Not before the leg is in the call (the caller's audio arrives): what is sent
        # earlier is lost, and a slow join would cut off the start of the greeting.
        # A call that sends nothing at all (no bridge writes to a lone leg) is spoken to
        # after a while anyway.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.hear_within_s):
                await session.heard.wait()
        # Into the transcript first, so it lists what the caller hears in that order.
        await self._post(call.call_id, "transcript", {"speaker": "ai", "text": PROMPTS[name]})
        await session.play(self.prompts[name])

    async def _hush(self, call: _Call) -> None:
        speaking, call.speaking = call.speaking, None
        await _settle(call.call_id, speaking)

    # ---- control API -------------------------------------------------------------------------

    async def _post(self, call_id: str, action: str, body: Mapping[str, str]) -> int | None:
        """POST to the control API; the status, or None if Switchboard was unreachable.

        Failures are logged, never raised: a refused transcript line must not cut the
        caller's audio.
        """
        return (await self._ask(call_id, action, body))[0]

    async def _ask(
        self, call_id: str, action: str, body: Mapping[str, str]
    ) -> tuple[int | None, str | None]:
        """As _post, with the refusal's ``code`` (the handoff level's answer), if any."""
        call = self._calls.get(call_id)
        seat = call.seat if call is not None else None
        if seat is None or seat.http.closed:
            # Its assistant was re-pointed at another engine or removed mid-call: the
            # audio goes on, the reports stop.
            log.warning("call=%s %s not sent: no assistant's token for this call",
                        call_id, action)
            return None, None
        url = f"{self.api_base}/calls/{call_id}/{action}"
        try:
            async with seat.http.post(url, json=dict(body)) as resp:
                if resp.status < 400:
                    return resp.status, None
                text = await resp.text()
                log.warning("call=%s %s refused: %s %s", call_id, action, resp.status, text)
                try:
                    code = json.loads(text).get("code")
                except (ValueError, AttributeError):
                    code = None
                return resp.status, code if isinstance(code, str) else None
        except aiohttp.ClientError as exc:
            log.warning("call=%s %s failed: %s", call_id, action, exc)
            return None, None

