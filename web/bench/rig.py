"""A complete call on real Asterisk instances, for integration tests and benchmarks.

- The **caller** is a channel the carrier Asterisk places into the PBX; on the carrier
  side it is bridged with an RTP probe that sends the caller's tone and records what the
  caller hears, with arrival times.
- The **AI** is an AudioSocket engine that speaks the AI tone.
- The **agent** is a desk phone: the PBX dials it at a fixed contact on the carrier,
  where it answers at once and is bridged with an RTP probe sending the agent's tone.
- The **controller** is the product's own CallControl with a real store.

Everything that is not Switchboard (the carrier's phones, the probes, the AI) is the
:class:`World`. Tests run it in their own process; the benchmark runs it in a child
process (:mod:`web.bench.world_process`) so that the signal processing of the probes
never competes with the controller it is timing. ``time.monotonic`` is the system's
monotonic clock, so both processes stamp events on the same time line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update

from handoff.agents import AgentRole, EndpointKind, Presence
from handoff.assistants import FallbackKind
from handoff.controller import LiveServices, build_controller
from handoff.events import EventHub
from handoff.live import CallControl, LiveCall, Timing, add_when_in_stasis, call_key
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Agent
from pbx import runtime
from pbx.ari import AriClient, AriError
from pbx.asterisk_config import InboundRoute, Queue, SipAgent, SipTrunk
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
)

AGENT_PHONE_NUMBER = "7001"
AGENT_SIP_USER = "desk-ada"  # Ada's desk phone: the agent of every benchmark call
LATE_VOICE_S = 0.6
SUPERVISOR_PHONE_NUMBER = "7002"  # Sam, the supervisor's desk phone
# Bea's desk phone is a real SIP user agent (tests.sip_phone): it registers itself.
DESK_PHONE_SIP_USER = "desk-bea"
DESK_PHONE_PASSWORD = "desk-bea-secret"
FALLBACK_NUMBER = "5001"  # the sales team's outside line, answered on the carrier


@dataclass
class Pair:
    pbx: AsteriskInstance
    carrier: AsteriskInstance


@contextlib.asynccontextmanager
async def asterisk_pair(
    installation: runtime.Installation, state_dir: Path, tag: str, rtp_timeout: int = 30,
    max_calls: int = 0,
) -> AsyncIterator[Pair]:
    """A Switchboard PBX and a carrier Asterisk with a SIP trunk between them.

    The carrier also plays Ada's desk phone: the PBX reaches her at 7001 on the carrier;
    and Sam's, the supervisor's, at 7002. Bea's desk phone has no fixed contact: it is
    reached wherever it registered from. Both take ``max_calls`` calls at once (0: the
    machine's default).
    """
    # Ports first, so that each side's trunk can name the other's SIP port.
    pbx_ports = runtime.allocate_ports(runtime.PortRequest(), max_calls=max_calls)
    taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
    carrier_ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken,
                                           max_calls=max_calls)
    pbx = runtime.new_instance(
        installation,
        f"{tag}-pbx",
        state_dir,
        ports=pbx_ports,
        max_calls=max_calls,
        trunks=(
            SipTrunk("carrier", "127.0.0.1", carrier_ports.sip),
            # A second carrier line the PBX knows by its address (a documentation address:
            # nothing here ever dials it or calls from it).
            SipTrunk("backup", "192.0.2.10", 5060),
        ),
        routes=(
            InboundRoute("2000", "receptionist"),
            InboundRoute("_21XX", "sales"),
            # The benchmark's classic baseline: its own Stasis app, then app_queue.
            InboundRoute("2999", "baseline", app="baseline"),
        ),
        queues=(Queue("bench", (AGENT_SIP_USER,)),),
        agents=(
            SipAgent(
                AGENT_SIP_USER, "desk-ada-secret", "deskphone", "Ada",
                contact=f"sip:{AGENT_PHONE_NUMBER}@127.0.0.1:{carrier_ports.sip}",
            ),
            SipAgent(
                "desk-sam", "desk-sam-secret", "deskphone", "Sam",
                contact=f"sip:{SUPERVISOR_PHONE_NUMBER}@127.0.0.1:{carrier_ports.sip}",
            ),
            SipAgent(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, "deskphone", "Bea"),
        ),
        rtp_timeout=rtp_timeout,
    )
    carrier = runtime.new_instance(
        installation,
        f"{tag}-carrier",
        state_dir,
        ports=carrier_ports,
        max_calls=max_calls,
        app="carrier",
        trunks=(SipTrunk("switchboard", "127.0.0.1", pbx_ports.sip),),
        routes=(InboundRoute("_5XXX", "fallback"), InboundRoute("_7XXX", "agentphone")),
    )
    await pbx.start()
    try:
        await carrier.start()
        try:
            yield Pair(pbx=pbx, carrier=carrier)
        finally:
            await carrier.stop()
    finally:
        await pbx.stop()


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
        speaking = asyncio.create_task(session.play(tone(AI_HZ, 120.0).tobytes()))
        try:
            async for _ in session.frames():
                pass
        finally:
            self._sessions.discard(session)
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)


@dataclass(frozen=True)
class EngineAt:
    """The controller's view of an engine that takes any stream: just an address."""

    address: str

    def expect_call(self, call_id: str) -> None:
        return None


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
    _ready_phone: tuple[str, str, RtpProbe] | None = None
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
        for bridge, media in list(self._parts.values()):
            await self._drop_phone(bridge, media)
        if self._ready_phone is not None:
            bridge, media, probe = self._ready_phone
            await self._drop_phone(bridge, media)
            self.agent_probes.append(probe)
        await self.ari.close()
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
        for number, outbound in self._outbound.items():
            if outbound == channel["id"]:
                bridge, media, _ = await self._new_phone(self.probes[number])
                await add_when_in_stasis(self.ari, bridge, channel["id"])
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
        if send_after:
            asyncio.get_running_loop().call_later(
                send_after, probe.start_sending, ("127.0.0.1", port))
        else:
            probe.start_sending(("127.0.0.1", port))
        await add_when_in_stasis(self.ari, bridge["id"], media["id"])
        return bridge["id"], media["id"], probe

    async def _drop_phone(self, bridge: str, media: str) -> None:
        with contextlib.suppress(AriError):
            await self.ari.channels.hangup(media)
        with contextlib.suppress(AriError):
            await self.ari.bridges.destroy(bridge)

    async def _on_end(self, event: Mapping[str, Any]) -> None:
        # When a call leg on the carrier ends, its phone (probe leg and bridge) goes too.
        parts = self._parts.pop(event["channel"]["id"], None)
        if parts is not None:
            await self._drop_phone(*parts)

    # ---- what the orchestrator asks ------------------------------------------------------

    async def place_call(self, number: str = "2000") -> str:
        """Call ``number`` from a new caller; returns the caller's number, unique per call."""
        self._placed += 1
        caller_number = f"+1555{os.getpid() % 1000:03d}{self._placed:04d}"
        self.probes[caller_number] = await open_probe(CALLER_HZ)
        outbound = f"caller-{uuid.uuid4().hex[:12]}"
        self._outbound[caller_number] = outbound
        await self.ari.channels.originate(
            f"PJSIP/{number}@switchboard", app="carrier", channel_id=outbound,
            caller_id=f"Test Caller <{caller_number}>",
        )
        return caller_number

    async def set_agent_phone(self, mode: str) -> None:
        # late: answers at once but its voice starts LATE_VOICE_S later (as a browser's
        # does, after ICE and DTLS).
        if mode not in ("answer", "ring", "reject", "late"):
            raise ValueError(f"agent phone mode {mode!r}")
        self.agent_phone = mode

    async def first_heard(self, caller: str, who: str, after: float) -> float | None:
        return self.probes[caller].first(who, after)

    async def gap_ms(self, caller: str, start: float, end: float) -> float:
        return self.probes[caller].longest_gap_ms(start, end)

    async def frames(self, caller: str, start: float, end: float) -> list[tuple[float, str]]:
        """What the caller heard between two instants: (arrival, who or '-' or '~')."""
        return [
            (r.at, r.who or ("~" if r.voiced else "-"))
            for r in self.probes[caller].received
            if start <= r.at <= end
        ]

    async def agent_heard_caller(self) -> bool:
        return any(p.first("caller") is not None for p in self.agent_probes)

    async def hang_up(self, caller: str) -> None:
        await self.ari.channels.hangup(self._outbound[caller])

    async def forget(self, caller: str) -> None:
        """A finished call's probe is closed so long runs keep few sockets open."""
        probe = self.probes.pop(caller, None)
        if probe is not None:
            await probe.close()


@dataclass
class Rig:
    """The controller side: the product's CallControl and store, plus a World to call."""

    pbx: AsteriskInstance
    control: CallControl
    store: Store
    pbx_ari: AriClient
    world: World | Any  # a World here, or its proxy in a child process
    agent_id: int
    # Sam: a supervisor, off duty, reached at his desk phone (keyword-only, so subclasses
    # keep adding positional fields).
    supervisor_id: int = field(default=0, kw_only=True)
    # Supervision and call-backs, built with the control as the product builds them.
    live: LiveServices = field(kw_only=True)

    async def place_call(self, number: str = "2000", wait_ai: bool = True) -> PlacedCall:
        caller = await self.world.place_call(number)
        placed = PlacedCall(caller)
        if wait_ai:
            placed.call_id = await self._wait_call_with_ai(caller)
        return placed

    async def _wait_call_with_ai(self, number: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for live in self.control.calls.values():
                if live.ai and live.caller_number == number:
                    return live.call_id
            await asyncio.sleep(0.01)
        raise TimeoutError(f"the call from {number} never reached the AI")

    async def wait_hears(
        self, placed: PlacedCall, who: str, after: float = 0.0, timeout: float = 5
    ) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = await self.world.first_heard(placed.caller, who, after)
            if at is not None:
                return float(at)
            await asyncio.sleep(0.05)  # arrival times are stamped as packets come in
        raise TimeoutError(f"the caller never heard {who}")

    async def gap_ms(self, placed: PlacedCall, start: float, end: float) -> float:
        return float(await self.world.gap_ms(placed.caller, start, end))

    async def hand_to_agent(
        self, placed: PlacedCall, *, settled: bool = False
    ) -> tuple[int, LiveCall]:
        """The AI asks for a person, Ada accepts and her phone answers: (handoff id, the
        live call). With `settled`, also until the AI has left (the agent has the call)."""
        handoff_id = await self.control.request_handoff(placed.call_id, reason="caller_asked",
                                                        summary="x")
        await self.control.accept(handoff_id, self.agent_id)
        live = self.control.calls[placed.call_id]
        await asyncio.wait_for(live.answered.wait(), 5)
        if settled:
            await self.control.settled(live)
        return handoff_id, live

    async def hang_up_caller(self, placed: PlacedCall) -> None:
        await self.world.hang_up(placed.caller)


@dataclass
class PlacedCall:
    caller: str  # the caller's number, which tells calls apart on the PBX
    call_id: str = ""


@contextlib.asynccontextmanager
async def rig(
    pbx: AsteriskInstance,
    world: World | Any,
    db_path: Path,
    timing: Timing | None = None,
    check_ledger: bool = True,
) -> AsyncIterator[Rig]:
    """The controller wired to a started ``world`` (whose engine address it uses).

    On a normal exit every call must have ended with an outcome (``check_ledger``);
    a test that leaves calls up on purpose, to adopt them later, turns that off.
    """
    engine = create_store_engine(f"sqlite:///{db_path}")
    await upgrade_to_head(engine)
    store = Store(engine)
    async with store.transaction() as tx:
        agent = await tx.agents.by_sip_user(AGENT_SIP_USER)
        if agent is None:
            agent = await tx.agents.create(
                login="ada", display_name="Ada", sip_user=AGENT_SIP_USER,
                sip_password="desk-ada-secret", endpoint_kind=EndpointKind.DESKPHONE,
            )
        agent_id = agent.id
        supervisor = await tx.agents.by_sip_user("desk-sam")
        if supervisor is None:
            supervisor = await tx.agents.create(
                login="sam", display_name="Sam", sip_user="desk-sam",
                sip_password="desk-sam-secret", endpoint_kind=EndpointKind.DESKPHONE,
                role=AgentRole.SUPERVISOR,
            )
        supervisor_id = supervisor.id
        if await tx.assistants.by_name("receptionist") is None:
            # The receptionist keeps callers it cannot place and records a callback;
            # sales sends them to a fallback number on the carrier after two seconds.
            await tx.assistants.create(
                name="receptionist", number_pattern="2000", adapter="audiosocket",
                control_token_hash=hashlib.sha256(b"rig-token").hexdigest(),
            )
            await tx.assistants.create(
                name="sales", number_pattern="_21XX", adapter="audiosocket",
                control_token_hash=hashlib.sha256(b"rig-sales").hexdigest(),
                accept_timeout_s=2, fallback_kind=FallbackKind.NUMBER,
                fallback_number=FALLBACK_NUMBER,
            )
    # Ada is at her desk: on duty and available, so handoffs are offered to her. Seated
    # by a direct write, not as a change someone made on a desk: the audit log then holds
    # only what the calls under test did (off duty <=> offline, handoff.agents.PRESENCE).
    async with engine.begin() as connection:
        await connection.execute(update(Agent).where(Agent.id == agent_id).values(
            on_duty=True, presence=Presence.AVAILABLE))
    pbx_ari = AriClient(pbx.ari_url, *pbx.ari_auth, apps="switchboard", key=call_key)
    live = build_controller(
        pbx_ari, store, EventHub(),
        {name: EngineAt(world_engine(world)) for name in ("receptionist", "sales")},
        fallback_trunk="carrier",
        recordings=db_path.parent / "recordings",
        host_path=lambda rel: pbx.host_path(f"{pbx.spec.dirs.spool}/{rel}"),
        timing=timing, supervisor_ring_timeout_s=5, callback_ring_timeout_s=5,
    )
    await pbx_ari.start()
    await pbx_ari.wait_ready(10)
    try:
        yield Rig(pbx, live.control, store, pbx_ari, world, agent_id,
                  supervisor_id=supervisor_id, live=live)
        if check_ledger:
            async with store.transaction() as tx:
                still_open = [c.id for c in await tx.calls.open_calls()]
            assert not still_open, f"calls left without an outcome: {still_open}"
    finally:
        await live.close()
        await pbx_ari.close()
        await engine.dispose()


def world_engine(world: World | Any) -> str:
    return str(world.engine.address if isinstance(world, World) else world.engine_address)


@contextlib.asynccontextmanager
async def local_world(carrier: AsteriskInstance) -> AsyncIterator[World]:
    world = World(carrier.ari_url, carrier.ari_auth)
    await world.start()
    try:
        yield world
    finally:
        await world.close()
