"""The composition root: builds every long-lived object once and hands it down.

Start-up, in order (``cleanup_ctx``, so shutdown runs in reverse and always completes):
1. the store: database engine, migrations, the demo set-up on first start;
2. telephony: Asterisk with a configuration rendered from the store (assistants become
   routes, agents become SIP endpoints), plus the demo carrier that places test calls.
   An Asterisk left running by a controller that crashed is re-attached, not replaced:
   the calls in it go on;
3. the controller: the ARI client (reconciling on every connect), the call control and
   the built-in reference receptionist.

A crash of this process leaves Asterisk and its calls up; Ctrl-C / SIGTERM stop all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.agents import AgentRole, EndpointKind
from handoff.assistants import FallbackKind
from handoff.callback import Callbacks
from handoff.controller import build_controller
from handoff.events import EventHub
from handoff.live import CallControl, Timing, call_key
from handoff.metrics import SwitchboardMetrics
from handoff.phone_watch import PhoneWatch
from handoff.receptionist import Receptionist, make_prompts
from handoff.settings import Settings
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.supervision import Supervision
from pbx import runtime
from pbx.ami import AmiClient
from pbx.ari import AriClient
from pbx.asterisk_config import (
    InboundRoute,
    SipAgent,
    SipTrunk,
    TlsListener,
    spec_from_dict,
    spec_to_dict,
)
from pbx.demo_caller import DEMO_CALLER_WORDS, DemoCaller, install_voice
from pbx.security_events import SecurityEvents
from web.ai_api import API_PREFIX, hash_control_token, new_control_token, setup_ai_api
from web.dashboard.access import Shape, own_auth, public
from web.dashboard.passwords import Passwords
from web.dashboard.routes import route_policy, setup_dashboard
from web.dashboard.tools import Tools, setup_tools
from web.dashboard.typedefs import DASHBOARD, SoftphoneSettings
from web.doctor import state_file

log = logging.getLogger(__name__)

CARRIER_TRUNK = "carrier"
RECEPTIONIST = "receptionist"
DEMO_NUMBER = "2000"
DEMO_AGENTS = (("ada", "Ada Lovelace", AgentRole.AGENT), ("grace", "Grace Hopper",
               AgentRole.AGENT), ("admin", "Admin", AgentRole.ADMIN))


@dataclass
class Telephony:
    """What `run` started or re-attached: the PBX and, for the demo, the carrier."""

    installation: runtime.Installation | None = None
    pbx: runtime.AsteriskInstance | None = None
    carrier: runtime.AsteriskInstance | None = None
    adopted: bool = False
    status: str = "starting"

    def softphone_url(self) -> str | None:
        """Where browser softphones register: the PBX's SIP WebSocket (wss with TLS)."""
        if self.pbx is None:
            return None
        spec = self.pbx.spec
        if spec.tls is not None:
            return f"wss://{spec.bind_address}:{spec.tls.port}/ws"
        return f"ws://{spec.bind_address}:{spec.ports.http}/ws"


@dataclass
class Controller:
    """Filled in once Asterisk runs; the HTTP routes reach the live objects through it."""

    ari: AriClient | None = None
    # AMI, for what ARI does not give: the PBX's security events.
    ami: AmiClient | None = None
    control: CallControl | None = None
    receptionist: Receptionist | None = None
    supervision: Supervision | None = None
    callbacks: Callbacks | None = None

    # The AI control API's CallCommands, delegated to the call control once it exists.
    async def request_handoff(
        self, call_id: str, *, reason: str, summary: str, topic: str | None = None,
        priority: str = "normal",
    ) -> int:
        return await self._control().request_handoff(
            call_id, reason=reason, summary=summary, topic=topic, priority=priority
        )

    async def end_call(self, call_id: str) -> None:
        await self._control().end_call(call_id)

    # The dashboard's Commands.
    async def accept(self, handoff_id: int, agent_id: int) -> None:
        await self._control().accept(handoff_id, agent_id)

    async def return_to_ai(self, call_id: str) -> None:
        await self._control().return_to_ai(call_id)

    async def transfer(self, call_id: str, from_agent: int, to_agent: int, note: str) -> int:
        return await self._control().transfer(call_id, from_agent, to_agent, note)

    async def phone_registered(self, sip_user: str) -> bool | None:
        # While the controller starts nobody can tell: going on duty is not held up.
        return None if self.control is None else await self.control.phone_registered(sip_user)

    def _control(self) -> CallControl:
        if self.control is None:
            raise web.HTTPServiceUnavailable(reason="the call controller is starting")
        return self.control


@dataclass
class Services:
    settings: Settings
    db: AsyncEngine
    store: Store
    hub: EventHub = field(default_factory=EventHub)
    telephony: Telephony = field(default_factory=Telephony)
    controller: Controller = field(default_factory=Controller)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    demo_credentials: dict[str, str] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)


# ---- 1. the store ------------------------------------------------------------------------


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    await upgrade_to_head(services.db)
    if services.settings.demo.enabled:
        services.demo_credentials = await seed_demo(services.store)
    try:
        yield
    finally:
        await services.db.dispose()


async def seed_demo(store: Store) -> dict[str, str]:
    """The demo on an empty database: the receptionist at 2000 and three people.

    Returns the dashboard passwords it created (printed once, stored only hashed).
    """
    created: dict[str, str] = {}
    async with store.transaction() as tx:
        if await tx.assistants.by_name(RECEPTIONIST) is None:
            await tx.assistants.create(
                name=RECEPTIONIST, number_pattern=DEMO_NUMBER, adapter="builtin",
                control_token_hash=hash_control_token(new_control_token()),
                accept_timeout_s=45, fallback_kind=FallbackKind.AI_CALLBACK,
            )
        for login, name, role in DEMO_AGENTS:
            if await tx.agents.by_login(login) is not None:
                continue
            password = secrets.token_urlsafe(9)
            await tx.agents.create(
                login=login, display_name=name, role=role, sip_user=f"agent-{login}",
                sip_password=secrets.token_urlsafe(18), endpoint_kind=EndpointKind.WEBRTC,
                password_hash=hash_password(password),
            )
            created[login] = password
    return created


def hash_password(password: str) -> str:
    return Passwords().hash(password)


# ---- 2. telephony --------------------------------------------------------------------------


async def telephony_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    telephony = services.telephony
    try:
        await start_telephony(services)
    except BaseException:
        await stop_telephony(telephony)
        raise
    state = write_state(services)
    try:
        yield
    finally:
        telephony.status = "stopping"
        await stop_telephony(telephony)
        if state is not None:
            state.unlink(missing_ok=True)


async def start_telephony(services: Services) -> None:
    settings, telephony = services.settings, services.telephony
    ast = settings.asterisk
    cache = Path(ast.cache_dir) if ast.cache_dir else None
    install = await asyncio.to_thread(runtime.locate, ast.source, cache, ast.mirror)
    telephony.installation = install
    if install.kind == "external":
        telephony.status = "external"
        return
    if await reattach(services, install):
        return
    routes, agents = await routes_and_agents(services.store)
    pbx_ports = runtime.allocate_ports(
        runtime.PortRequest(
            http=ast.http_port, sip=ast.sip_port, ami=ast.ami_port,
            rtp_start=ast.rtp_start, rtp_end=ast.rtp_end,
        ),
        max_calls=ast.call_limit,
    )
    carrier_ports = None
    if settings.demo.enabled and settings.demo.test_caller:
        taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
        carrier_ports = runtime.allocate_ports(
            runtime.PortRequest(rtp_start=settings.demo.rtp_start,
                                rtp_end=settings.demo.rtp_end),
            avoid=taken, max_calls=ast.call_limit,
        )
    trunks = [SipTrunk(t.name, t.host, t.port, t.from_user) for t in settings.trunks]
    if carrier_ports is not None:
        trunks.append(SipTrunk(CARRIER_TRUNK, "127.0.0.1", carrier_ports.sip))
    telephony.pbx = runtime.new_instance(
        install, instance_name("pbx", settings), settings.data_path, ports=pbx_ports,
        ephemeral=False, max_calls=ast.call_limit,
        bind_address=ast.bind_address, media_address=ast.media_address,
        sip_realm=ast.sip_realm, country=ast.country,
        tls=TlsListener(ast.tls_cert, ast.tls_key) if ast.tls_cert else None,
        trunks=tuple(trunks), routes=routes, agents=agents,
    )
    await telephony.pbx.start()
    if carrier_ports is not None:
        voice = await asyncio.to_thread(demo_caller_voice, settings)
        telephony.carrier = runtime.new_instance(
            install, instance_name("carrier", settings), settings.data_path, ports=carrier_ports,
            ephemeral=False, max_calls=ast.call_limit, app="carrier", test_caller=True,
            trunks=(SipTrunk("switchboard", "127.0.0.1", pbx_ports.sip),),
        )
        install_voice(telephony.carrier, voice)
        await telephony.carrier.start()
    telephony.status = "ok"


def demo_caller_voice(settings: Settings) -> Path:
    """The test caller's words, spoken once by espeak-ng next to the receptionist's
    prompts (blocking the first time: call it at set-up, or via ``to_thread``)."""
    spoken = make_prompts(settings.data_path / "prompts", texts={"test-caller": DEMO_CALLER_WORDS})
    return spoken["test-caller"]


def instance_name(role: str, settings: Settings) -> str:
    """One Asterisk tree per data folder: two installations (a demo and a test run)
    on one machine never share a configuration or a spool."""
    digest = hashlib.sha256(str(settings.data_path).encode()).hexdigest()[:8]
    return f"{role}-{digest}"


async def routes_and_agents(
    store: Store,
) -> tuple[tuple[InboundRoute, ...], tuple[SipAgent, ...]]:
    """Assistants answer their numbers; every agent gets their SIP endpoint."""
    async with store.transaction() as tx:
        assistants = await tx.assistants.all()
        agents = await tx.agents.all()
    routes = tuple(InboundRoute(a.number_pattern, a.name) for a in assistants)
    endpoints = tuple(
        SipAgent(a.sip_user, a.sip_password,
                 "webrtc" if a.endpoint_kind is EndpointKind.WEBRTC else "deskphone",
                 a.display_name)
        for a in agents
    )
    return routes, endpoints


async def reattach(services: Services, install: runtime.Installation) -> bool:
    """Take over the Asterisk instances a crashed run left behind, with their calls."""
    path = state_file(services.settings)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    try:
        pid = int(state["pid"])
        os.kill(pid, 0)
    except (KeyError, ValueError, ProcessLookupError):
        pass  # the run that wrote it is gone: its Asterisk may be ours to take
    except PermissionError:
        return False
    else:
        if pid != os.getpid():
            raise runtime.AsteriskUnavailable(
                f"Switchboard already runs (pid {pid}); stop it first"
            )
    telephony = services.telephony
    for role in ("pbx", "carrier"):
        entry = state.get(f"{role}_instance")
        if not entry:
            continue
        spec = spec_from_dict(entry["spec"])
        instance = await runtime.attach(install, spec, Path(entry["host_root"]),
                                        int(entry["pid"]))
        setattr(telephony, role, instance)
    if telephony.pbx is None:
        if telephony.carrier is not None:
            await telephony.carrier.stop()
            telephony.carrier = None
        return False
    log.warning("re-attached to the running Asterisk (pid %s): its calls go on",
                telephony.pbx.pid)
    telephony.adopted = True
    telephony.status = "ok"
    return True


async def stop_telephony(telephony: Telephony) -> None:
    for instance in (telephony.carrier, telephony.pbx):
        if instance is not None:
            await instance.stop()


def write_state(services: Services) -> Path | None:
    """Tell `switchboard doctor`, the operator and a restarted run where things are."""
    settings, telephony = services.settings, services.telephony
    pbx, install = telephony.pbx, telephony.installation
    if pbx is None or install is None:
        return None
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "dashboard_url": settings.origin,
        "asterisk_kind": install.kind,
        "asterisk_where": install.where,
        "asterisk_pid": pbx.pid,
        "ari_url": pbx.ari_url,
        "ari_user": pbx.spec.ari_user,
        "ari_password": pbx.spec.ari_password,
        "sip": f"udp:{pbx.spec.bind_address}:{pbx.sip_port}",
        "config_dir": str(pbx.host_root / "etc"),
        "log": str(pbx.log_file),
    }
    for role, instance in (("pbx", pbx), ("carrier", telephony.carrier)):
        if instance is not None:
            state[f"{role}_instance"] = {
                "spec": spec_to_dict(instance.spec),
                "host_root": str(instance.host_root),
                "pid": instance.pid,
            }
    # Holds the ARI secrets: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2)
    return path


# ---- 3. the controller ---------------------------------------------------------------------


async def controller_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings, telephony, controller = services.settings, services.telephony, services.controller
    pbx = telephony.pbx
    if pbx is None:
        # An external Asterisk (docker compose): ARI from SWITCHBOARD_ASTERISK.
        raise runtime.AsteriskUnavailable(
            "an external Asterisk is configured; running the controller against it is "
            "not supported yet (the docker compose deployment is a preview)"
        )
    token = new_control_token()
    async with services.store.transaction() as tx:
        await tx.assistants.set_control_token_hash(RECEPTIONIST, hash_control_token(token))
    receptionist = await asyncio.to_thread(
        Receptionist.from_folder, f"{settings.origin}{API_PREFIX}", token,
        settings.data_path / "prompts",
    )
    ari = AriClient(pbx.ari_url, *pbx.ari_auth, apps="switchboard", key=call_key)
    live = build_controller(
        ari, services.store, services.hub, {RECEPTIONIST: receptionist},
        fallback_trunk=settings.trunks[0].name if settings.trunks else (
            CARRIER_TRUNK if telephony.carrier else None),
        recordings=settings.data_path / "recordings",
        host_path=lambda rel: pbx.host_path(f"{pbx.spec.dirs.spool}/{rel}"),
        timing=Timing(wrap_up_s=float(settings.desk.wrap_up_s)),
    )
    control = live.control
    controller.ari, controller.control, controller.receptionist = ari, control, receptionist
    controller.supervision, controller.callbacks = live.supervision, live.callbacks
    ami = AmiClient("127.0.0.1", pbx.spec.ports.ami, pbx.spec.ami_user, pbx.spec.ami_secret)
    security = SecurityEvents(services.metrics)
    ami.on_security(security.observe)
    controller.ami = ami
    phone_watch = PhoneWatch(services.store, services.hub, control.phone_registered)
    await receptionist.start()
    await ari.start()
    # Calls do not wait for AMI: it only watches (it reconnects by itself).
    await ami.start()
    await ari.wait_ready(30)
    watching = [asyncio.create_task(phone_watch.run(), name="phone watch"),
                asyncio.create_task(security.run(), name="security summaries")]
    print_banner(services)
    try:
        yield
    finally:
        for task in watching:
            task.cancel()
        await asyncio.gather(*watching, return_exceptions=True)
        controller.supervision = controller.callbacks = None
        await live.close()
        await ami.close()
        controller.ami = None
        await ari.close()
        await receptionist.close()
        controller.control = None


def print_banner(services: Services) -> None:
    settings, telephony = services.settings, services.telephony
    pbx, install = telephony.pbx, telephony.installation
    lines = ["", "Switchboard is running.", f"  Dashboard   {settings.origin}"]
    if install is not None:
        lines.append(f"  Asterisk    {install.version} ({install.where})")
    if pbx is not None:
        lines += [
            f"  ARI         {pbx.ari_url} (loopback only)",
            f"  SIP         udp {pbx.spec.bind_address}:{pbx.sip_port}; WebRTC "
            f"ws://{pbx.spec.bind_address}:{pbx.spec.ports.http}/ws",
            f"  Config      {pbx.host_root / 'etc'}",
            f"  Logs        {pbx.log_file}",
        ]
    if telephony.adopted:
        lines.append("  (re-attached to the Asterisk a previous run left running)")
    if telephony.carrier is not None:
        lines.append(f"  Test caller demo carrier on udp 127.0.0.1:{telephony.carrier.sip_port}"
                     f"; it calls the receptionist at {DEMO_NUMBER}")
    for login, password in services.demo_credentials.items():
        lines.append(f"  Demo login  {login} / {password}")
    lines += ["  `switchboard doctor` reports what runs; Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Prometheus counters follow the event hub for as long as the app runs."""
    task = asyncio.create_task(app[METRICS].run(), name="metrics")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


METRICS = web.AppKey("metrics", SwitchboardMetrics)


# ---- handlers ---------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    telephony, ari = services.telephony, services.controller.ari
    events = ari.status if ari is not None else "starting"
    ami = services.controller.ami
    healthy = telephony.status in ("ok", "external") and events == "connected"
    body = {
        "status": "ok" if healthy else "degraded",
        "asterisk": telephony.installation.version if telephony.installation else None,
        "ari_events": events,
        # Not part of "healthy": calls go on without it, only its watching stops.
        "ami": ami.status if ami is not None else "starting",
        "calls": len(services.controller.control.calls) if services.controller.control else 0,
    }
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[SERVICES].metrics)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    db = create_store_engine(settings.database_url)
    services = Services(settings=settings, db=db, store=Store(db))
    app[SERVICES] = services
    registry = services.metrics
    up = Gauge("switchboard_asterisk_up", "1 while the PBX answers", registry=registry)
    up.set_function(lambda: 1.0 if services.telephony.status in ("ok", "external") else 0.0)
    live = Gauge("switchboard_calls_live", "calls in progress", registry=registry)
    live.set_function(
        lambda: float(len(services.controller.control.calls))
        if services.controller.control else 0.0
    )
    app.cleanup_ctx.extend([store_ctx, telephony_ctx, controller_ctx])
    # Every route is declared in the access policy; one that is not is refused.
    policy = route_policy(app)
    app.router.add_get("/status", status)
    policy.declare("GET", "/status", public(Shape.API))
    app.router.add_get("/metrics", metrics)
    policy.declare("GET", "/metrics", public(Shape.API))
    setup_ai_api(app, store=services.store, commands=services.controller, hub=services.hub)
    policy.declare_prefix(API_PREFIX, own_auth())  # assistant bearer tokens
    setup_dashboard(
        app, store=services.store, hub=services.hub, commands=services.controller,
        origin=settings.origin, secure_cookies=settings.origin.startswith("https://"),
        softphone=SoftphoneSettings(services.telephony.softphone_url),
    )

    async def test_call() -> str:
        """The admin's "place a test call": the demo carrier calls the receptionist."""
        carrier = services.telephony.carrier
        if carrier is None:
            raise RuntimeError("the demo carrier is not running (demo.test_caller is off)")
        return await DemoCaller(carrier.ari_url, carrier.ari_auth, number=DEMO_NUMBER).place()

    async def endpoints_changed() -> None:
        """A new agent's phone can register at once: the PBX reloads its endpoints."""
        pbx = services.telephony.pbx
        if pbx is None:
            # An external Asterisk's configuration is its admin's, not ours to rewrite.
            raise RuntimeError("this Asterisk is not run by Switchboard")
        await pbx.apply_directory(*await routes_and_agents(services.store))

    setup_tools(app, Tools(
        recordings=settings.data_path / "recordings",
        supervision=lambda: services.controller.supervision,
        callbacks=lambda: services.controller.callbacks,
        test_call=test_call if settings.demo.enabled else None,
        endpoints_changed=endpoints_changed,
    ))
    app[METRICS] = SwitchboardMetrics(
        registry, services.hub, services.store,
        websocket_clients=lambda: len(app[DASHBOARD].hub.clients),
    )
    app.cleanup_ctx.append(metrics_ctx)  # after store_ctx: it reads the agents table
    return app
