"""A complete call on real Asterisk instances, for integration tests and benchmarks.

- :func:`asterisk_pair`: a Switchboard PBX and a carrier Asterisk with a SIP trunk between
  them;
- the **controller** (:func:`rig`, :class:`Rig`) is the product's own CallControl with a
  real store, built as the product builds it;
- everything that is not Switchboard (the carrier's phones, the probes, the AI) is the
  :class:`~web.bench.world.World` it calls through.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update

from handoff.agents import AgentRole, EndpointKind, Presence
from handoff.assistants import EngineKind, FallbackKind
from handoff.controller import LiveServices, build_controller
from handoff.events import EventHub
from handoff.live import CallControl, LiveCall, Timing, call_key
from handoff.outbound import Outbound
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Agent
from handoff.trunks import Trunk
from pbx import runtime
from pbx.ari import AriClient
from pbx.ari.client import ARI_LINK
from pbx.asterisk_config import InboundRoute, Queue, SipAgent
from pbx.runtime import AsteriskInstance
from pbx.trunk_config import SipTrunk
from web.bench.sip_phone import SipPhone
from web.bench.waiting import until
from web.bench.world import (
    AGENT_PHONE_NUMBER,
    FALLBACK_NUMBER,
    SUPERVISOR_PHONE_NUMBER,
    World,
)

AGENT_SIP_USER = "desk-ada"  # Ada's desk phone: the agent of every benchmark call
# Bea's desk phone is a real SIP user agent (tests.sip_phone): it registers itself.
DESK_PHONE_SIP_USER = "desk-bea"
DESK_PHONE_PASSWORD = "desk-bea-secret"


# What the carrier answers, all national numbers: its outside lines (5xxx), the agents'
# desk phones on it (7xxx) and its test callers (+1555..., World.place_call).
CARRIER_PATTERNS = ("_5XXX", "_7XXX", "_+1555XXXXXXX")


def carrier_outbound(store: Store, **trunk: Any) -> Outbound:
    """Calls out go through the trunk "carrier" (the pair's), allowed CARRIER_PATTERNS;
    ``trunk`` changes its other fields (a caller ID, a class allowed)."""
    return Outbound(store, settings_trunks=(
        Trunk(**{"name": "carrier", "host": "127.0.0.1", "patterns": CARRIER_PATTERNS,
                 **trunk}),))


@dataclass
class Pair:
    pbx: AsteriskInstance
    carrier: AsteriskInstance


@contextlib.asynccontextmanager
async def asterisk_pair(
    installation: runtime.Installation, state_dir: Path, tag: str, rtp_timeout: int = 30,
    max_calls: int = 0, *, desk_phones: tuple[SipAgent, ...] = (),
) -> AsyncIterator[Pair]:
    """A Switchboard PBX and a carrier Asterisk with a SIP trunk between them.

    The carrier also plays Ada's desk phone: the PBX reaches her at 7001 on the carrier;
    and Sam's, the supervisor's, at 7002. Bea's desk phone has no fixed contact: it is
    reached wherever it registered from, as are ``desk_phones`` (more agents' desk
    phones). Both take ``max_calls`` calls at once (0: the machine's default).
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
        route_unknown=True,
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
            *desk_phones,
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

    async def place_call(self, number: str = "2000", wait_ai: bool = True,
                         **sent: str) -> PlacedCall:
        """A call to ``number``; ``sent``: World.place_call's caller_name, caller_number."""
        caller = await self.world.place_call(number, **sent)
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
    *,
    outbound: Callable[[Store], Outbound] = carrier_outbound,
    ari_url: str | None = None,
    handler_budget: float = ARI_LINK.handler_budget,
    node: str | None = None,
) -> AsyncIterator[Rig]:
    """The controller wired to a started ``world`` (whose engine address it uses); calls
    out go through the trunks ``outbound`` gives for the rig's store. ``ari_url``: where
    the controller reaches the PBX's ARI, when not directly (through a path a fault
    drill cuts). ``handler_budget``: the ARI events' (pbx.event_link.LinkSettings).
    ``node``: the cluster node the controller is (its calls are stamped
    with it, and other nodes' controllers on the same hub may hand it their agents).

    On a normal exit every call must have ended with an outcome (``check_ledger``);
    a test that leaves calls up on purpose, to adopt them later, turns that off.
    """
    engine = create_store_engine(f"sqlite:///{db_path}")
    await upgrade_to_head(engine)
    store = Store(engine, node=node)
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
                name="receptionist", numbers=["2000"], engine=EngineKind.AUDIOSOCKET,
                engine_address=world_engine(world),
                control_token_hash=hashlib.sha256(b"rig-token").hexdigest(),
            )
            await tx.assistants.create(
                name="sales", numbers=["_21XX"], engine=EngineKind.AUDIOSOCKET,
                engine_address=world_engine(world),
                control_token_hash=hashlib.sha256(b"rig-sales").hexdigest(),
                accept_timeout_s=2, fallback_kind=FallbackKind.NUMBER,
                fallback_number=FALLBACK_NUMBER,
            )
        # Both answered by the world's engine: a rig after a restart has a new one.
        for assistant in await tx.assistants.listed():
            await tx.assistants.set_engine(assistant.id, EngineKind.AUDIOSOCKET,
                                           world_engine(world))
    # Ada is at her desk: on duty and available, so handoffs are offered to her. Seated
    # by a direct write, not as a change someone made on a desk: the audit log then holds
    # only what the calls under test did (off duty <=> offline, handoff.agents.PRESENCE).
    async with engine.begin() as connection:
        await connection.execute(update(Agent).where(Agent.id == agent_id).values(
            on_duty=True, presence=Presence.AVAILABLE))
    pbx_ari = AriClient(ari_url or pbx.ari_url, *pbx.ari_auth, apps="switchboard",
                        key=call_key, handler_budget=handler_budget)
    live = build_controller(
        pbx_ari, store, EventHub(), outbound=outbound(store),
        recordings=db_path.parent / "recordings",
        spool=pbx.spool(),
        timing=timing, supervisor_ring_timeout_s=5, callback_ring_timeout_s=5,
        sounds=pbx.sound_folder(),
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


@dataclass
class Bea:
    """Bea at her desk: on duty, her real SIP desk phone (web.bench.sip_phone) registered."""

    r: Rig
    phone: SipPhone
    agent_id: int


@contextlib.asynccontextmanager
async def bea_at_her_desk(r: Rig, *, alone: bool = True) -> AsyncIterator[Bea]:
    """Bea seated at the rig's PBX; ``alone``: Ada goes off duty, so only Bea is offered
    calls."""
    async with r.store.transaction() as tx:
        if alone:
            await tx.agents.set_duty(r.agent_id, False)
        agent = await tx.agents.create(
            login="bea", display_name="Bea", sip_user=DESK_PHONE_SIP_USER,
            sip_password=DESK_PHONE_PASSWORD, endpoint_kind=EndpointKind.DESKPHONE)
        await tx.agents.set_duty(agent.id, True)
        await tx.agents.set_presence(agent.id, Presence.AVAILABLE)
    pbx_sip = ("127.0.0.1", r.pbx.spec.ports.sip)
    async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, pbx_sip) as phone:
        await until(lambda: r.control.phone_registered(DESK_PHONE_SIP_USER))
        yield Bea(r, phone, agent.id)


def world_engine(world: World | Any) -> str:
    return str(world.engine.address if isinstance(world, World) else world.engine_address)

