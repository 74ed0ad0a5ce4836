"""The composition root: builds every long-lived object once and hands it down.

The HTTP server listens at once; start-up runs beside it (:mod:`web.startup`: /status
says 503 and what it waits for, each stage retried while what it needs is away), in
order, and shutdown leaves the stages in reverse wherever start-up got to:
1. the store: database engine, migrations, the demo set-up on first start
   (:mod:`web.demo`);
2. telephony (:mod:`web.telephony`): Asterisk with a configuration rendered from the
   store (assistants become routes, agents become SIP endpoints), plus the demo carrier
   that places test calls. An Asterisk left running by a controller that crashed is
   re-attached, not replaced: the calls in it go on;
3. the controller: the ARI client (reconciling on every connect), the call control and
   the built-in reference receptionist.

A crash of this process leaves Asterisk and its calls up; Ctrl-C / SIGTERM stop all.
An Asterisk started here that dies on its own is started again (:mod:`web.asterisk_keeper`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import zoneinfo
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from handoff import tls
from handoff.controller import build_controller
from handoff.live import Timing, call_key
from handoff.live.legs import Phones
from handoff.metrics import SwitchboardMetrics
from handoff.nodes import NodeLease
from handoff.outbound import Outbound
from handoff.phone_watch import PhoneWatch
from handoff.receptionist import Receptionist
from handoff.recordings import expire_recordings
from handoff.settings import Settings
from handoff.shared_events import SharedEvents
from handoff.store import Store, create_store_engine, upgrade_to_head
from pbx import runtime
from pbx.ami import AmiClient, AmiLoginFailed
from pbx.ari import AriClient
from pbx.demo_caller import DemoCaller
from pbx.external import ExternalAsterisk
from pbx.security_events import SecurityEvents
from pbx.trunk_status import TrunkStatus, endpoint_states
from web.ai_api import API_PREFIX, setup_ai_api
from web.app_metrics import register_process_metrics
from web.assistants import seat_builtin
from web.asterisk_keeper import AsteriskKeeper, KeeperMetrics
from web.dashboard.access import Shape, own_auth, public
from web.dashboard.routes import route_policy, setup_dashboard
from web.dashboard.tools import Tools, setup_tools
from web.dashboard.typedefs import DASHBOARD, DashboardOptions, SoftphoneSettings
from web.dashboard.words import Site
from web.demo import DEMO_NUMBER, seed_demo
from web.kpi_metrics import KpiMetrics
from web.proxies import real_client
from web.services import SERVICES, Services
from web.sip_blocks import BlockPolicy, SipBlocker
from web.startup import (
    START_STAGES,
    Stage,
    StageContext,
    background_start,
    while_starting,
)
from web.telephony import (
    follow_directory,
    start_telephony,
    stop_telephony,
    through_edge,
    write_state,
)
from web.trunk_watch import TrunkMetrics, TrunkWatch

log = logging.getLogger(__name__)


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


# ---- 2. telephony --------------------------------------------------------------------------


async def telephony_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    telephony = services.telephony
    try:
        await start_telephony(services.settings, services.store, telephony)
    except BaseException:
        await stop_telephony(telephony)
        raise
    state = write_state(services.settings, telephony)
    try:
        yield
    finally:
        telephony.status = "stopping"
        await stop_telephony(telephony)
        if state is not None:
            state.unlink(missing_ok=True)


# ---- 3. the controller ---------------------------------------------------------------------


async def controller_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings, telephony, controller = services.settings, services.telephony, services.controller
    pbx = telephony.pbx
    if pbx is None:
        raise runtime.AsteriskUnavailable("no PBX to control: telephony did not start")
    # One built-in receptionist for every assistant on the built-in engine: seated below
    # with a fresh token for each (and again whenever the assistants change). Straight to
    # our own listener: the public origin may be a proxy this host cannot reach, or a
    # name its certificate covers that the local address is not.
    receptionist = await asyncio.to_thread(
        functools.partial(
            Receptionist.from_folder, f"{settings.local_url}{API_PREFIX}", "",
            settings.data_path / "prompts",
            ssl=tls.pinned(settings.server.tls_cert) if settings.server.tls_cert else True),
    )
    ari = AriClient(pbx.ari_url, *pbx.ari_auth, apps="switchboard", key=call_key)
    live = build_controller(
        ari, services.store, services.hub, receptionist,
        unknown_numbers=settings.routing.unknown_numbers,
        outbound=Outbound(services.store, country=settings.asterisk.country,
                          settings_trunks=telephony.fixed_trunks),
        recordings=settings.data_path / "recordings",
        # Moved on this host, or (an Asterisk someone else runs) fetched through ARI.
        spool=pbx.spool(),
        timing=Timing(wrap_up_s=float(settings.desk.wrap_up_s),
                      voicemail_max_s=float(settings.desk.voicemail_max_s)),
        open_lines=settings.desk.open_line,
        # Business hours are the site's: the zone its people read times in.
        zone=zoneinfo.ZoneInfo(settings.desk.time_zone) if settings.desk.time_zone else None,
        # A number's menu prompt is spoken into the Asterisk's own sounds; one someone
        # else runs has folders this host cannot write, and plays a beep instead.
        sounds=None if isinstance(pbx, ExternalAsterisk) else pbx.sound_folder(),
        call_limit=settings.active_call_limit,
        on_refused=lambda why: app[METRICS].calls_refused.labels(why).inc(),
        # A cluster node's desk phones registered to the edge are rung there.
        phones=Phones(settings.cluster.phones_edge, functools.partial(through_edge, telephony)),
    )
    control = live.control
    controller.ari, controller.control, controller.receptionist = ari, control, receptionist
    controller.open_lines_setting = settings.desk.open_line
    controller.supervision, controller.callbacks = live.supervision, live.callbacks
    ami = AmiClient(pbx.ami_host, pbx.spec.ports.ami, pbx.spec.ami_user, pbx.spec.ami_secret)
    security = SecurityEvents(services.metrics)
    ami.on_security(security.observe)
    sec = settings.security
    blocker = SipBlocker(
        services.store,
        BlockPolicy(sec.block_after, sec.block_window_s, sec.block_for_s, sec.never_block),
        services.metrics, applied=lambda: pbx.spec.blocked, apply=pbx.apply_blocks,
        exempt=lambda: [trunk.host for trunk in pbx.spec.trunks])
    ami.on_security(blocker.observe)
    controller.ami, controller.blocker = ami, blocker
    controller.trunks = TrunkWatch(lambda: pbx.spec.trunks, ami, endpoint_states(ari),
                                   pbx.log_file)
    phone_watch = PhoneWatch(services.store, services.hub, controller.phone_registered)
    watching: list[asyncio.Task[None]] = []
    # A failure on the way up (ARI not ready in time) leaves nothing running either:
    # start-up tries this stage again from scratch.
    try:
        await receptionist.start()
        await seat_builtin(services.store, receptionist)
        await ari.start()
        # Calls do not wait for AMI: it only watches (it reconnects by itself).
        await ami.start()
        if isinstance(pbx, ExternalAsterisk):
            await ami_checked(ami, pbx)
        await ari.wait_ready(30)
        watching += [asyncio.create_task(phone_watch.run(), name="phone watch"),
                     asyncio.create_task(security.run(), name="security summaries"),
                     # Also gives the PBX the blocks still in force from before a restart.
                     asyncio.create_task(blocker.run(), name="blocked SIP addresses"),
                     asyncio.create_task(follow_directory(services.directory_changed),
                                         name="people, assistants and trunks"),
                     asyncio.create_task(controller.trunks.run(), name="trunk status")]
        print_banner(services)
        yield
    finally:
        for task in watching:
            task.cancel()
        await asyncio.gather(*watching, return_exceptions=True)
        controller.supervision = controller.callbacks = None
        await live.close()
        await ami.close()
        controller.ami = controller.blocker = controller.trunks = None
        await ari.close()
        await receptionist.close()
        controller.control = None


async def ami_checked(ami: AmiClient, pbx: ExternalAsterisk) -> None:
    """An Asterisk someone else runs: its AMI account must be the one rendered (trunks'
    new passwords are sent over it, and scanners are blocked from its security events);
    a wrong secret stops start-up naming the variable."""
    try:
        await ami.wait_ready(15)
    except AmiLoginFailed:
        raise runtime.AsteriskUnavailable(
            f"the Asterisk's AMI at {pbx.ami_host}:{pbx.spec.ports.ami} refused user "
            f"{pbx.spec.ami_user!r}: its manager.conf holds another secret than "
            "SWITCHBOARD_AMI_SECRET") from None
    except TimeoutError:
        raise runtime.AsteriskUnavailable(
            f"no AMI answers at {pbx.ami_host}:{pbx.spec.ports.ami} (asterisk.ami_port; "
            "the host is asterisk.source's)") from None

    async def register(trunk: str) -> None:
        await ami.send_action({"Action": "PJSIPRegister", "Registration": trunk})

    pbx.register = register


def _ari_reach(pbx: runtime.AsteriskInstance | ExternalAsterisk) -> str:
    """Who can reach the ARI port Switchboard started: Asterisk's HTTP listens where SIP
    does (asterisk.bind_address), so only a loopback bind keeps it on this machine."""
    if isinstance(pbx, ExternalAsterisk):
        return ""
    try:
        loopback = ipaddress.ip_address(pbx.spec.bind_address).is_loopback
    except ValueError:
        loopback = False
    return (" (loopback only)" if loopback else
            f" (and on {pbx.spec.bind_address}: keep its port firewalled to this machine)")


def print_banner(services: Services) -> None:
    settings, telephony = services.settings, services.telephony
    pbx, install = telephony.pbx, telephony.installation
    lines = ["", "Switchboard is running.", f"  Dashboard   {settings.origin}"]
    if install is not None:
        lines.append(f"  Asterisk    {install.version} ({install.where})")
    if pbx is not None:
        lines += [
            f"  ARI         {pbx.ari_url}{_ari_reach(pbx)}",
            f"  SIP         udp {pbx.spec.bind_address}:{pbx.spec.ports.sip}; WebRTC "
            f"{telephony.softphone_url()}",
            f"  Config      {pbx.config_dir}",
        ]
        if pbx.log_file is not None:
            lines.append(f"  Logs        {pbx.log_file}")
    if telephony.adopted:
        lines.append("  (re-attached to the Asterisk a previous run left running)")
    if telephony.carrier is not None:
        lines.append(f"  Test caller demo carrier on udp 127.0.0.1:{telephony.carrier.sip_port}"
                     f"; it calls the receptionist at {DEMO_NUMBER}")
    for login, password in services.demo_credentials.items():
        lines.append(f"  Demo login  {login} / {password}")
    lines += ["  `switchboard doctor` reports what runs; Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


# How often recordings past their retention are deleted (recordings.keep_days).
RETENTION_CHECK_S = 3600.0


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """Recordings older than recordings.keep_days go, at start and every hour."""
    services = app[SERVICES]
    keep_days = services.settings.recordings.keep_days

    async def prune() -> None:
        while True:
            try:
                gone = await expire_recordings(
                    services.store, services.settings.data_path / "recordings", keep_days,
                    datetime.now(UTC))
                if gone:
                    log.info("deleted %d recordings older than %d days", gone, keep_days)
            except Exception:
                log.exception("recordings past their retention could not be deleted")
            await asyncio.sleep(RETENTION_CHECK_S)

    task = asyncio.create_task(prune(), name="recording retention") if keep_days else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """``work`` as a task for the block: cancelled and awaited however the block ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def keeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Started last, stopped first: the shutdown's own stop of Asterisk is not a death."""
    async with running(app[KEEPER].run(), "asterisk keeper"):
        yield


async def shared_events_ctx(app: web.Application) -> AsyncIterator[None]:
    """Before the controller, so that other nodes sharing the store see its first card."""
    shared = app[SERVICES].shared_events
    async with running(shared.run(), "shared events") if shared else contextlib.nullcontext():
        yield


async def lease_ctx(app: web.Application) -> AsyncIterator[None]:
    """Before the controller: the node's lease is held before it reconciles, so no
    surviving node takes the calls it is about to adopt."""
    lease = app[SERVICES].lease
    if lease is None:
        yield
        return
    await lease.hold()
    async with running(lease.run(), "node lease"):
        yield


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Prometheus counters follow the event hub for as long as the app runs."""
    async with running(app[METRICS].run(), "metrics"):
        yield


METRICS = web.AppKey("metrics", SwitchboardMetrics)
KPI_METRICS = web.AppKey("kpi_metrics", KpiMetrics)
KEEPER = web.AppKey("keeper", AsteriskKeeper)


# ---- handlers ---------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    telephony, ari = services.telephony, services.controller.ari
    events = ari.status if ari is not None else "starting"
    ami = services.controller.ami
    startup = services.startup
    healthy = startup.up and telephony.status in ("ok", "external") and events == "connected"
    body: dict[str, object] = {
        "status": "ok" if healthy else "starting" if not startup.up else "degraded",
        # While starting: "database" or "asterisk", and why it is not there yet.
        **({} if startup.up else startup.status()),
        "asterisk": telephony.installation.version if telephony.installation else None,
        "ari_events": events,
        # Not part of "healthy": calls go on without it, only its watching stops.
        "ami": ami.status if ami is not None else "starting",
        "calls": len(services.controller.control.calls) if services.controller.control else 0,
    }
    if services.shared_events is not None:  # not "healthy" either: other nodes' desks lag
        body["shared_events"] = services.shared_events.link.status
    if services.lease is not None:
        body["node"] = {"name": services.lease.name, "lease": services.lease.link.status}
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    # Today's key figures are read from the store now, for this scrape (once it is up:
    # while start-up waits for the database, the process's own figures still answer).
    if request.app[SERVICES].startup.up:
        await request.app[KPI_METRICS].refresh()
    data = generate_latest(request.app[SERVICES].metrics)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(settings: Settings) -> web.Application:
    db = create_store_engine(settings.database_url)
    node = settings.cluster.node
    services = Services(settings=settings, db=db, store=Store(db, node=node or None))
    if db.url.get_backend_name() == "postgresql":
        services.shared_events = SharedEvents(services.hub, settings.database_url, node=node)
    if node:
        services.controller.cluster_node = True
        services.controller.through_edge = lambda user: through_edge(services.telephony,
                                                                     user)
        services.lease = NodeLease(services.store, services.hub,
                                   lease_s=settings.cluster.lease_s,
                                   taken_over=services.controller.hang_up_taken_over,
                                   reopen_lines=services.controller.reopen_lines)
    services.controller.open_lines_setting = settings.desk.open_line
    app = web.Application(client_max_size=256 * 1024, middlewares=[
        real_client(settings.trusted_proxies),
        while_starting(services.startup, frozenset({"/status", "/metrics"})),
    ])
    app[SERVICES] = services
    register_process_metrics(
        services.metrics, telephony_status=lambda: services.telephony.status,
        ari=lambda: services.controller.ari, ami=lambda: services.controller.ami,
        calls_live=lambda: len(services.controller.control.calls)
        if services.controller.control else 0,
    )

    def trunk_statuses() -> dict[str, TrunkStatus]:
        watch = services.controller.trunks
        return watch.statuses if watch is not None else {}

    services.metrics.register(TrunkMetrics(trunk_statuses))
    site = Site.of(settings.desk.time_zone, settings.asterisk.country)
    app[KPI_METRICS] = KpiMetrics(services.store, site)
    services.metrics.register(app[KPI_METRICS])
    # Every route is declared in the access policy; one that is not is refused.
    policy = route_policy(app)
    app.router.add_get("/status", status)
    policy.declare("GET", "/status", public(Shape.API))
    app.router.add_get("/metrics", metrics)
    policy.declare("GET", "/metrics", public(Shape.API))
    setup_ai_api(app, store=services.store, commands=services.controller, hub=services.hub,
                 seats=lambda: services.controller.receptionist.tokens
                 if services.controller.receptionist is not None else {})
    policy.declare_prefix(API_PREFIX, own_auth())  # assistant bearer tokens
    setup_dashboard(
        app, store=services.store, hub=services.hub, commands=services.controller,
        origin=settings.origin, secure_cookies=settings.origin.startswith("https://"),
        softphone=SoftphoneSettings(services.telephony.softphone_url),
        options=DashboardOptions(site=site),
    )

    async def test_call() -> str:
        """The admin's "place a test call": the demo carrier calls the receptionist."""
        carrier = services.telephony.carrier
        if carrier is None:
            raise RuntimeError("the demo carrier is not running (demo.test_caller is off)")
        return await DemoCaller(carrier.ari_url, carrier.ari_auth, number=DEMO_NUMBER).place()

    async def endpoints_changed() -> None:
        """A new agent's phone can register at once, a disabled one's no more; a new
        assistant's number answers at once, with its engine."""
        await services.directory_changed()

    async def blocks_changed() -> None:
        """An admin lifted a block: the PBX answers that address again at once."""
        blocker = services.controller.blocker
        if blocker is None:
            raise RuntimeError("the PBX is not running")
        await blocker.refresh()

    setup_tools(app, Tools(
        recordings=settings.data_path / "recordings",
        supervision=lambda: services.controller.supervision,
        callbacks=lambda: services.controller.callbacks,
        test_call=test_call if settings.demo.enabled else None,
        endpoints_changed=endpoints_changed,
        blocks_changed=blocks_changed,
        fixed_trunks=lambda: services.telephony.fixed_trunks,
        trunk_statuses=trunk_statuses,
    ))
    app[METRICS] = SwitchboardMetrics(
        services.metrics, services.hub, services.store,
        websocket_clients=lambda: len(app[DASHBOARD].hub.clients),
    )
    def started_here() -> list[runtime.AsteriskInstance]:
        telephony = services.telephony
        return [instance for instance in (telephony.pbx, telephony.carrier)
                if isinstance(instance, runtime.AsteriskInstance)]

    app[KEEPER] = AsteriskKeeper(
        started_here, restarted=lambda _: write_state(settings, services.telephony))
    services.metrics.register(KeeperMetrics(app[KEEPER]))
    # What the sub-systems set up to run with the app (the dashboard's feed) reads the
    # store: it becomes a stage too, after the controller as before.
    # (aiohttp types a cleanup context as either kind; the dashboard's is a generator.)
    theirs = cast(list[StageContext], list(app.cleanup_ctx))
    app.cleanup_ctx.clear()
    stages: list[Stage] = [
        ("database", store_ctx), ("database", shared_events_ctx),
        ("asterisk", telephony_ctx), ("database", lease_ctx), ("asterisk", controller_ctx),
        *(("database", ctx) for ctx in theirs),
        ("database", metrics_ctx), ("database", retention_ctx),
        # Started last, stopped first (its own docstring).
        ("asterisk", keeper_ctx),
    ]
    app[START_STAGES] = stages
    app.cleanup_ctx.append(background_start(services.startup, stages))
    return app
