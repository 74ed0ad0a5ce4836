"""The world around Switchboard in a rig: everything on the carrier Asterisk, and the AI.

- The **caller** is a channel the carrier Asterisk places into the PBX; on the carrier
  side it is bridged with an RTP probe that sends the caller's tone and records what the
  caller hears, with arrival times.
- The **AI** is an AudioSocket engine that speaks the AI tone.
- The **agent** is a desk phone: the PBX dials it at a fixed contact on the carrier,
  where it answers at once and is bridged with an RTP probe sending the agent's tone.

All of it is the :class:`World`. Tests run it in their own process; the benchmark runs it
in a child process (:mod:`web.bench.world_process`) so that the signal processing of the
probes never competes with the controller it is timing. ``time.monotonic`` is the
system's monotonic clock, so both processes stamp events on the same time line. The
controller side is :mod:`web.bench.rig`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handoff.live import add_when_in_stasis
from pbx.ari import AriClient, AriError
from pbx.audiosocket import AudioSocketServer, AudioSocketSession
from pbx.runtime import AsteriskInstance
from web.bench.audio import (
    AGENT_HZ,
    AI_HZ,
    CALLER_HZ,
    SUPERVISOR_HZ,
    RtpProbe,
    open_probe,
    tone,
    voiced_by,
)
from web.bench.sip_phone import SipPhone

log = logging.getLogger(__name__)

AGENT_PHONE_NUMBER = "7001"  # Ada's desk phone on the carrier
LATE_VOICE_S = 0.6
SUPERVISOR_PHONE_NUMBER = "7002"  # Sam, the supervisor's desk phone
FALLBACK_NUMBER = "5001"  # the sales team's outside line, answered on the carrier


@functools.cache
def ai_voice() -> bytes:
    """Two minutes of the AI's tone, made once: a copy per call (1.9 MB) made a capacity
    run's engine hold hundreds of MB."""
    return bytes(tone(AI_HZ, 120.0).tobytes())


class ToneEngine:
    """An AI engine that says nothing but its tone on every call it gets.

    It can also fail as real engines do: refuse the next connections (down, or too busy
    to take a stream) and drop the ones it has (crashed mid-call).
    """

    def __init__(self) -> None:
        self.server = AudioSocketServer(any_stream=self._speak)
        self.connections = 0
        self.refusing = 0  # connections to refuse from now on; -1: every one
        self._sessions: set[AudioSocketSession] = set()

    @property
    def address(self) -> str:
        return self.server.address

    async def drop_calls(self) -> None:
        """Hang up every stream the engine has, as a crashed engine's do."""
        for session in list(self._sessions):
            await session.hangup()

    async def _speak(self, session: AudioSocketSession) -> None:
        self.connections += 1
        if self.refusing:
            if self.refusing > 0:
                self.refusing -= 1
            return  # the server hangs the stream up at once
        self._sessions.add(session)
        speaking = asyncio.create_task(session.play(ai_voice()))
        try:
            async for _ in session.frames():
                pass
        finally:
            self._sessions.discard(session)
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)


@dataclass
class DeskPhones:
    """Agents' own SIP desk phones registered with the PBX, by SIP user: each answers
    its open line's INVITE by itself and sends the agent's tone.

    Apart from the callers' phones so that a capacity run can give them a process of
    their own: sharing one loop with 25 callers' probes, a phone's frames left late at
    the move, and the caller's gap across a handoff read 40 ms p50 and 100 max where,
    in their own process, it reads 20 and 23-40: the rig's delay, counted as the
    product's."""

    phones: dict[str, SipPhone] = field(default_factory=dict)

    async def open_desk_phones(self, host: str, port: int, users: list[list[str]]) -> None:
        """Desk phones for ``users`` ([SIP user, password]) registered with the PBX at
        ``host``:``port``, each answering by itself an INVITE that asks it to (an open
        line's) and refusing any other with 480: a rung call would ring out its whole
        timeout at a desk nobody watches, where a refusal fails the handoff at once."""
        for user, password in users:
            phone = SipPhone(user, password, (host, port))
            phone.auto_answer, phone.answer = True, 480
            await phone.__aenter__()
            self.phones[user] = phone

    async def close_desk_phones(self) -> None:
        for phone in self.phones.values():
            await phone.close()
        self.phones.clear()

    async def desk_heard_caller(self, user: str, after: float) -> float | None:
        """When the desk phone's current call (its line) first heard the caller's
        voice after ``after``."""
        heard = [d.heard("caller", after) for d in self.phones[user].dialogs.values()
                 if d.confirmed.is_set() and not d.ended.is_set()]
        return min((at for at in heard if at is not None), default=None)



@dataclass
class World:
    """The carrier's phones (caller and agent), their probes, and the AI engine."""

    ari_url: str  # the carrier Asterisk's
    ari_auth: tuple[str, str]
    agent_phone: str = "answer"  # what Ada's desk phone does: answer, ring or reject
    engine: ToneEngine = field(default_factory=ToneEngine)
    ari: AriClient = field(init=False)
    probes: dict[str, RtpProbe] = field(default_factory=dict)  # caller number -> probe
    agent_probes: list[RtpProbe] = field(default_factory=list)
    supervisor_probes: list[RtpProbe] = field(default_factory=list)
    _outbound: dict[str, str] = field(default_factory=dict)  # caller number -> channel
    _parts: dict[str, tuple[str, str]] = field(default_factory=dict)  # leg -> (bridge, media)
    # Every phone made and not yet dropped: close() drops those a leg's StasisEnd handler
    # had taken from _parts but not finished dropping (closing the client cancels it).
    _phones: set[tuple[str, str]] = field(default_factory=set)
    _speakers: dict[str, RtpProbe] = field(default_factory=dict)  # media leg -> its probe
    _ready_phone: tuple[str, str, RtpProbe] | None = None
    # Agents' own SIP desk phones registered with the PBX (a capacity run's open lines);
    # a capacity run keeps them in a process of their own (world_process --desks).
    desks: DeskPhones = field(default_factory=DeskPhones)
    _placed: int = 0

    async def start(self) -> str:
        await self.engine.server.start()
        self.ari = AriClient(self.ari_url, *self.ari_auth, apps="carrier")
        self.ari.on("StasisStart", self._on_start)
        self.ari.on("StasisEnd", self._on_end)
        await self.ari.start()
        await self.ari.wait_ready(10)
        return self.engine.address

    async def close(self) -> None:
        # A test that failed half-way leaves its callers up: hang them up, so one
        # failure does not leave channels that fail every test after it.
        for outbound in self._outbound.values():
            with contextlib.suppress(AriError):
                await self.ari.channels.hangup(outbound)
        if self._ready_phone is not None:
            self.agent_probes.append(self._ready_phone[2])
        for bridge, media in list(self._phones):
            await self._drop_phone(bridge, media)
        await self.ari.close()
        await self.close_desk_phones()
        for probe in [*self.probes.values(), *self.agent_probes, *self.supervisor_probes]:
            await probe.close()
        await self.engine.server.close()

    # ---- phones ------------------------------------------------------------------------

    async def _on_start(self, event: Mapping[str, Any]) -> None:
        channel = event["channel"]
        args = event.get("args") or []
        if args[:2] == ["inbound", "fallback"]:
            # Somebody answers the fallback line at once and speaks (the agent's tone).
            bridge, media, probe = await self._new_phone()
            await add_when_in_stasis(self.ari, bridge, channel["id"])
            # Counted before the answer: the PBX may report the leg up before the
            # answer's HTTP reply reaches us.
            self.agent_probes.append(probe)
            await self.ari.channels.answer(channel["id"])
            self._parts[channel["id"]] = (bridge, media)
            return
        exten = str(channel.get("dialplan", {}).get("exten", ""))
        if args[:2] == ["inbound", "agentphone"] and exten == SUPERVISOR_PHONE_NUMBER:
            # Sam's desk phone answers at once and speaks the supervisor's tone.
            bridge, media, probe = await self._new_phone(await open_probe(SUPERVISOR_HZ))
            await add_when_in_stasis(self.ari, bridge, channel["id"])
            # Counted before the answer: the PBX may report the leg up before the
            # answer's HTTP reply reaches us.
            self.supervisor_probes.append(probe)
            await self.ari.channels.answer(channel["id"])
            self._parts[channel["id"]] = (bridge, media)
            return
        if args[:2] == ["inbound", "agentphone"]:
            if self.agent_phone == "ring":
                return  # let it ring
            if self.agent_phone == "reject":
                await self.ari.channels.hangup(channel["id"], reason="busy")
                return
            # A desk phone that answers at once: its speaker (probe) is already connected,
            # so the agent's voice flows from the instant the call is answered.
            if self.agent_phone == "late":
                bridge, media, probe = await self._new_phone(send_after=LATE_VOICE_S)
            else:
                bridge, media, probe = self._ready_phone or await self._new_phone()
                self._ready_phone = None
            await add_when_in_stasis(self.ari, bridge, channel["id"])
            # Counted before the answer: the PBX may report the leg up before the
            # answer's HTTP reply reaches us.
            self.agent_probes.append(probe)
            await self.ari.channels.answer(channel["id"])
            self._parts[channel["id"]] = (bridge, media)
            return
        # Found before any await: callers placed meanwhile (a capacity ramp places
        # many at once) add to the table.
        number = next((n for n, o in self._outbound.items() if o == channel["id"]), None)
        if number is not None:
            bridge, media, _ = await self._new_phone(self.probes[number])
            try:
                await add_when_in_stasis(self.ari, bridge, channel["id"])
            except AriError as exc:
                # The caller hung up as the call was answered: nobody would end this
                # phone later (the leg's StasisEnd, queued behind, finds no parts).
                log.warning("caller %s: phone not connected to its leg: %s", number, exc)
                await self._drop_phone(bridge, media)
                return
            self._parts[channel["id"]] = (bridge, media)

    async def prepare_agent_phone(self) -> None:
        if self._ready_phone is None:
            self._ready_phone = await self._new_phone()

    async def _new_phone(
        self, probe: RtpProbe | None = None, send_after: float = 0.0
    ) -> tuple[str, str, RtpProbe]:
        probe = probe or await open_probe(AGENT_HZ)
        bridge = await self.ari.bridges.create(type="mixing")
        media = await self.ari.channels.external_media_rtp("carrier", f"127.0.0.1:{probe.port}")
        port = int(media["channelvars"]["UNICASTRTP_LOCAL_PORT"])
        self._phones.add((bridge["id"], media["id"]))
        self._speakers[media["id"]] = probe
        if send_after:
            def speak() -> None:
                if self._speakers.get(media["id"]) is probe:  # not dropped meanwhile
                    probe.start_sending(("127.0.0.1", port))
            asyncio.get_running_loop().call_later(send_after, speak)
        else:
            probe.start_sending(("127.0.0.1", port))
        await add_when_in_stasis(self.ari, bridge["id"], media["id"])
        return bridge["id"], media["id"], probe

    async def _drop_phone(self, bridge: str, media: str) -> None:
        # The phone goes quiet with its call, as a real one does. Before, its probe sent
        # to the freed port until the World closed: a long bench's ended calls loaded the
        # rig, and sprayed ports that later legs were given (Asterisk's strict RTP held:
        # calls with every free port of either side sprayed all heard the AI).
        if (speaker := self._speakers.pop(media, None)) is not None:
            speaker.stop_sending()
        with contextlib.suppress(AriError):
            await self.ari.channels.hangup(media)
        with contextlib.suppress(AriError):
            await self.ari.bridges.destroy(bridge)
        self._phones.discard((bridge, media))  # only once gone: a cancelled drop is redone

    async def _on_end(self, event: Mapping[str, Any]) -> None:
        # When a call leg on the carrier ends, its phone (probe leg and bridge) goes too.
        parts = self._parts.pop(event["channel"]["id"], None)
        if parts is not None:
            await self._drop_phone(*parts)

    # ---- what the orchestrator asks ------------------------------------------------------

    async def place_call(self, number: str = "2000", *, caller_name: str = "Test Caller",
                         caller_number: str | None = None) -> str:
        """Call ``number`` from a new caller; returns the caller's number, unique per call
        (pass one of your own, and a name, to send what a carrier would)."""
        self._placed += 1
        caller_number = caller_number or f"+1555{os.getpid() % 1000:03d}{self._placed:04d}"
        self.probes[caller_number] = await open_probe(CALLER_HZ)
        outbound = f"caller-{uuid.uuid4().hex[:12]}"
        self._outbound[caller_number] = outbound
        await self.ari.channels.originate(
            f"PJSIP/{number}@switchboard", app="carrier", channel_id=outbound,
            caller_id=f"{caller_name} <{caller_number}>",
        )
        return caller_number

    async def press(self, caller: str, keys: str) -> None:
        """The caller presses ``keys`` on their keypad (RFC 4733 over the trunk)."""
        await self.ari.channels.send_dtmf(self._outbound[caller], keys)

    async def set_agent_phone(self, mode: str) -> None:
        # late: answers at once but its voice starts LATE_VOICE_S later (as a browser's
        # does, after ICE and DTLS).
        if mode not in ("answer", "ring", "reject", "late"):
            raise ValueError(f"agent phone mode {mode!r}")
        self.agent_phone = mode

    async def first_heard(self, caller: str, who: str, after: float) -> float | None:
        return self.probes[caller].first(who, after)

    async def first_heard_in_mix(self, caller: str, who: str, after: float) -> float | None:
        return self.probes[caller].first_in_mix(who, after)

    async def wait_heard(self, caller: str, who: str, after: float, within: float) -> float | None:
        """When the caller first heard ``who`` after ``after``, waited for here up to
        ``within`` s (None: not by then): one request for a process that measures its own
        CPU, rather than one every poll."""
        deadline = time.monotonic() + within
        while (at := self.probes[caller].first(who, after)) is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)  # arrival times are stamped as packets come in
        return at

    async def gap_ms(self, caller: str, start: float, end: float) -> float:
        return self.probes[caller].longest_gap_ms(start, end)

    async def frames(self, caller: str, start: float, end: float) -> list[tuple[float, str]]:
        """What the caller heard between two instants: (arrival, who or '-' or '~')."""
        return [
            (r.at, r.kind)
            for r in self.probes[caller].received
            if start <= r.at <= end
        ]

    async def stream_stats(self, caller: str, start: float, end: float) -> dict[str, Any]:
        """What reached the caller between two instants, for a capacity run: packets,
        those that came more than a frame late (over 40 ms after the one before), the
        longest interval between two packets, and how many carried the AI's voice and
        how many an agent's (a caller handed to an agent hears them for a while).

        Every packet is judged, in one NumPy pass per caller (no per-frame Python work,
        cheap enough for hundreds of callers)."""
        arrivals = [r for r in self.probes[caller].received if start <= r.at <= end]
        payloads = [r.payload for r in arrivals]
        at = np.array([r.at for r in arrivals])
        steps = np.diff(at) if len(at) > 1 else np.zeros(0)
        return {"packets": len(arrivals), "late": int(np.sum(steps > 0.040)),
                "gap_max_ms": round(float(steps.max()) * 1000, 1) if len(steps) else None,
                "sampled": len(arrivals),
                "ai_sampled": voiced_by(AI_HZ, payloads),
                "agent_sampled": voiced_by(AGENT_HZ, payloads)}

    async def rig_counts(self, callers: list[str]) -> dict[str, dict[str, float]]:
        """Each caller's RTP packets received by the carrier from the PBX on the trunk
        (``carrier_received``, read at ``at``: the middle of the request) and the jitter
        of that stream as the carrier saw it (``rx_jitter``, ms). Against the PBX's own
        count of packets sent it places a loss on the trunk; against what the phone got,
        in the rig past it (the carrier's relay, or the phone's socket: the kernel's
        drops tell those apart)."""
        read: dict[str, dict[str, float]] = {}
        for caller in callers:
            outbound = self._outbound.get(caller)
            if outbound is None:
                continue
            asked = time.monotonic()
            try:
                stats = await self.ari.channels.rtp_statistics(outbound)
            except AriError:
                continue
            read[caller] = {"carrier_received": int(stats.get("rxcount") or 0),
                            "at": (asked + time.monotonic()) / 2,
                            # Asterisk's figure is in seconds.
                            "rx_jitter": float(stats.get("rxjitter") or 0) * 1000}
        return read

    async def open_desk_phones(self, host: str, port: int, users: list[list[str]]) -> None:
        await self.desks.open_desk_phones(host, port, users)

    async def close_desk_phones(self) -> None:
        await self.desks.close_desk_phones()

    async def desk_heard_caller(self, user: str, after: float) -> float | None:
        return await self.desks.desk_heard_caller(user, after)

    async def agent_heard_caller(self) -> bool:
        return any(p.first("caller") is not None for p in self.agent_probes)

    async def hang_up(self, caller: str) -> None:
        await self.ari.channels.hangup(self._outbound[caller])

    async def forget(self, caller: str) -> None:
        """A finished call's probe is closed so long runs keep few sockets open."""
        probe = self.probes.pop(caller, None)
        if probe is not None:
            await probe.close()


@contextlib.asynccontextmanager
async def local_world(carrier: AsteriskInstance) -> AsyncIterator[World]:
    world = World(carrier.ari_url, carrier.ari_auth)
    await world.start()
    try:
        yield world
    finally:
        await world.close()

