"""A complete call on real Asterisk instances, for integration tests and benchmarks.

- The **caller** is a channel the carrier Asterisk places into the PBX; on the carrier
  side it is bridged with an RTP probe that sends the caller's tone and records what the
  caller hears, with arrival times.
- The **AI** is an AudioSocket engine that speaks the AI tone.
- The **agent** is a desk phone: the PBX dials it at a fixed contact on the carrier,
  where it answers at once and is bridged with an RTP probe sending the agent's tone.
- The **controller** is the product's own CallControl with a real store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handoff.agents import EndpointKind
from handoff.call_control import CallControl, Timing, add_when_in_stasis, call_key
from handoff.events import EventHub
from handoff.store import Store, create_store_engine, upgrade_to_head
from pbx import runtime
from pbx.ari import AriClient
from pbx.asterisk_config import InboundRoute, SipAgent, SipTrunk
from pbx.audiosocket import AudioSocketServer, AudioSocketSession
from pbx.runtime import AsteriskInstance
from tests.bench.audio import AGENT_HZ, AI_HZ, CALLER_HZ, RtpProbe, open_probe, tone

AGENT_PHONE_NUMBER = "7001"


@dataclass
class Pair:
    pbx: AsteriskInstance
    carrier: AsteriskInstance


@contextlib.asynccontextmanager
async def asterisk_pair(
    installation: runtime.Installation, state_dir: Path, tag: str
) -> AsyncIterator[Pair]:
    """A Switchboard PBX and a carrier Asterisk with a SIP trunk between them.

    The carrier also plays Ada's desk phone: the PBX reaches her at 7001 on the carrier.
    """
    # Ports first, so that each side's trunk can name the other's SIP port.
    pbx_ports = runtime.allocate_ports(runtime.PortRequest())
    taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
    carrier_ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken)
    pbx = runtime.new_instance(
        installation,
        f"{tag}-pbx",
        state_dir,
        ports=pbx_ports,
        trunks=(SipTrunk("carrier", "127.0.0.1", carrier_ports.sip),),
        routes=(InboundRoute("2000", "receptionist"), InboundRoute("_21XX", "sales")),
        agents=(
            SipAgent(
                "desk-ada", "desk-ada-secret", "deskphone", "Ada",
                contact=f"sip:{AGENT_PHONE_NUMBER}@127.0.0.1:{carrier_ports.sip}",
            ),
        ),
    )
    carrier = runtime.new_instance(
        installation,
        f"{tag}-carrier",
        state_dir,
        ports=carrier_ports,
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
    """An AI engine that says nothing but its tone, for as long as the leg is up."""

    def __init__(self) -> None:
        self.server = AudioSocketServer()
        self.connections = 0

    @property
    def address(self) -> str:
        return self.server.address

    def expect_call(self, call_id: str) -> None:
        self.server.expect(uuid.UUID(call_id), self._speak)

    async def _speak(self, session: AudioSocketSession) -> None:
        self.connections += 1
        speaking = asyncio.create_task(session.play(tone(AI_HZ, 120.0).tobytes()))
        async for _ in session.frames():
            pass
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)


@dataclass
class PlacedCall:
    outbound: str  # the carrier's channel towards the PBX
    probe: RtpProbe
    call_id: str = ""
    agent_probe: RtpProbe | None = None


@dataclass
class Rig:
    pbx: AsteriskInstance
    carrier: AsteriskInstance
    control: CallControl
    store: Store
    pbx_ari: AriClient
    carrier_ari: AriClient
    engine: ToneEngine
    agent_id: int
    answer_agent: bool = True
    calls: dict[str, PlacedCall] = field(default_factory=dict)  # by outbound channel
    agent_probes: list[RtpProbe] = field(default_factory=list)
    _carrier_parts: list[tuple[str, str]] = field(default_factory=list)  # (bridge, media)

    # ---- the carrier side: the caller's phone and the agent's desk phone ----------------

    async def _on_carrier_start(self, event: Mapping[str, Any]) -> None:
        channel = event["channel"]
        args = event.get("args") or []
        if args[:2] == ["inbound", "agentphone"]:
            if not self.answer_agent:
                return  # let it ring
            await self.carrier_ari.channels.answer(channel["id"])
            probe = await open_probe(AGENT_HZ)
            self.agent_probes.append(probe)
            await self._attach(channel["id"], probe)
        elif channel["id"] in self.calls:
            await self._attach(channel["id"], self.calls[channel["id"]].probe)

    async def _attach(self, channel_id: str, probe: RtpProbe) -> None:
        bridge = await self.carrier_ari.bridges.create(type="mixing")
        media = await self.carrier_ari.channels.external_media_rtp(
            "carrier", f"127.0.0.1:{probe.port}"
        )
        port = int(media["channelvars"]["UNICASTRTP_LOCAL_PORT"])
        probe.start_sending(("127.0.0.1", port))
        await add_when_in_stasis(self.carrier_ari, bridge["id"], [channel_id, media["id"]])
        self._carrier_parts.append((bridge["id"], media["id"]))

    async def _on_carrier_end(self, event: Mapping[str, Any]) -> None:
        # When the call leg on the carrier ends, its probe leg and bridge go too.
        gone = event["channel"]["id"]
        for bridge_id, media_id in list(self._carrier_parts):
            try:
                bridge = await self.carrier_ari.bridges.get(bridge_id)
            except Exception:
                continue
            if gone in bridge["channels"] or not (set(bridge["channels"]) - {media_id}):
                with contextlib.suppress(Exception):
                    await self.carrier_ari.channels.hangup(media_id)
                with contextlib.suppress(Exception):
                    await self.carrier_ari.bridges.destroy(bridge_id)
                self._carrier_parts.remove((bridge_id, media_id))

    # ---- calls ----------------------------------------------------------------------------

    async def place_call(self, number: str = "2000") -> PlacedCall:
        probe = await open_probe(CALLER_HZ)
        outbound = f"caller-{uuid.uuid4().hex[:12]}"
        placed = PlacedCall(outbound, probe)
        self.calls[outbound] = placed
        caller_number = f"+1555{len(self.calls):07d}"  # tells the calls apart on the PBX
        await self.carrier_ari.channels.originate(
            f"PJSIP/{number}@switchboard", app="carrier", channel_id=outbound,
            caller_id=f"Test Caller <{caller_number}>",
        )
        placed.call_id = await self._wait_call_with_ai(caller_number)
        return placed

    async def _wait_call_with_ai(self, number: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for live in self.control.calls.values():
                if live.ai and live.caller_number == number:
                    return live.call_id
            await asyncio.sleep(0.01)
        raise TimeoutError(f"the call from {number} never reached the AI")

    async def wait_hears(self, placed: PlacedCall, who: str, after: float = 0.0,
                         timeout: float = 5) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = placed.probe.first(who, after)
            if at is not None:
                return at
            await asyncio.sleep(0.01)
        heard = [r.who for r in placed.probe.received[-20:]]
        raise TimeoutError(f"the caller never heard {who}; last frames: {heard}")

    async def hang_up_caller(self, placed: PlacedCall) -> None:
        await self.carrier_ari.channels.hangup(placed.outbound)

    async def close(self) -> None:
        for placed in self.calls.values():
            await placed.probe.close()
        for probe in self.agent_probes:
            await probe.close()


@contextlib.asynccontextmanager
async def rig(
    pbx: AsteriskInstance, carrier: AsteriskInstance, db_path: Path,
    timing: Timing | None = None,
) -> AsyncIterator[Rig]:
    engine = create_store_engine(f"sqlite:///{db_path}")
    await upgrade_to_head(engine)
    store = Store(engine)
    async with store.transaction() as tx:
        agent = await tx.agents.by_sip_user("desk-ada")
        if agent is None:
            agent = await tx.agents.create(
                login="ada", display_name="Ada", sip_user="desk-ada",
                sip_password="desk-ada-secret", endpoint_kind=EndpointKind.DESKPHONE,
            )
        agent_id = agent.id
    tone_engine = ToneEngine()
    await tone_engine.server.start()
    hub = EventHub()
    pbx_ari = AriClient(pbx.ari_url, *pbx.ari_auth, apps="switchboard", key=call_key)
    carrier_ari = AriClient(carrier.ari_url, *carrier.ari_auth, apps="carrier")
    control = CallControl(
        pbx_ari, store, hub, {"receptionist": tone_engine},
        recordings=db_path.parent / "recordings",
        host_path=lambda rel: pbx.host_path(f"{pbx.spec.dirs.spool}/{rel}"),
        timing=timing,
    )
    the_rig = Rig(pbx, carrier, control, store, pbx_ari, carrier_ari, tone_engine, agent_id)
    carrier_ari.on("StasisStart", the_rig._on_carrier_start)
    carrier_ari.on("StasisEnd", the_rig._on_carrier_end)
    await pbx_ari.start()
    await carrier_ari.start()
    await pbx_ari.wait_ready(10)
    await carrier_ari.wait_ready(10)
    try:
        yield the_rig
    finally:
        await the_rig.close()
        await control.close()
        await pbx_ari.close()
        await carrier_ari.close()
        await tone_engine.server.close()
        await engine.dispose()
