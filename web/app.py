"""The composition root: builds every long-lived object once and hands it down.

Asterisk (and, for the demo, a carrier Asterisk that places test calls) starts and
stops with the aiohttp app through ``cleanup_ctx``, so Ctrl-C or SIGTERM always stops
the PBX it started and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from handoff.settings import Settings
from pbx import runtime
from pbx.asterisk_config import InboundRoute, SipTrunk, TlsListener
from web.doctor import state_file

log = logging.getLogger(__name__)

CARRIER_NAME = "carrier"
DEMO_ROUTES = (InboundRoute("2000", "receptionist"),)


@dataclass
class Telephony:
    """What `run` started: the PBX and, for the demo, the carrier that calls into it."""

    installation: runtime.Installation | None = None
    pbx: runtime.AsteriskInstance | None = None
    carrier: runtime.AsteriskInstance | None = None
    status: str = "starting"
    problems: list[str] = field(default_factory=list)


SETTINGS = web.AppKey("settings", Settings)
TELEPHONY = web.AppKey("telephony", Telephony)
METRICS = web.AppKey("metrics", CollectorRegistry)


def _trunks(settings: Settings, carrier_sip: int | None) -> tuple[SipTrunk, ...]:
    trunks = [SipTrunk(t.name, t.host, t.port, t.from_user) for t in settings.trunks]
    if carrier_sip is not None:
        trunks.append(SipTrunk(CARRIER_NAME, "127.0.0.1", carrier_sip))
    return tuple(trunks)


async def start_telephony(settings: Settings, telephony: Telephony) -> None:
    ast = settings.asterisk
    cache = Path(ast.cache_dir) if ast.cache_dir else None
    install = await asyncio.to_thread(runtime.locate, ast.source, cache, ast.mirror)
    telephony.installation = install
    if install.kind == "external":
        telephony.status = "external"
        return
    pbx_ports = runtime.allocate_ports(
        runtime.PortRequest(
            http=ast.http_port,
            sip=ast.sip_port,
            ami=ast.ami_port,
            rtp_start=ast.rtp_start,
            rtp_end=ast.rtp_end,
        )
    )
    carrier_ports = None
    if settings.demo.enabled and settings.demo.test_caller:
        taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
        carrier_ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken)
    tls = TlsListener(ast.tls_cert, ast.tls_key) if ast.tls_cert else None
    telephony.pbx = runtime.new_instance(
        install,
        "pbx",
        settings.data_path,
        ports=pbx_ports,
        ephemeral=False,
        bind_address=ast.bind_address,
        media_address=ast.media_address,
        country=ast.country,
        tls=tls,
        trunks=_trunks(settings, carrier_ports.sip if carrier_ports else None),
        routes=DEMO_ROUTES,
    )
    await telephony.pbx.start()
    if carrier_ports is not None:
        telephony.carrier = runtime.new_instance(
            install,
            "demo-carrier",
            settings.data_path,
            ports=carrier_ports,
            app="carrier",
            trunks=(SipTrunk("switchboard", "127.0.0.1", pbx_ports.sip),),
        )
        await telephony.carrier.start()
    telephony.status = "ok"


async def stop_telephony(telephony: Telephony) -> None:
    for instance in (telephony.carrier, telephony.pbx):
        if instance is not None:
            await instance.stop()


def write_state(settings: Settings, telephony: Telephony) -> Path:
    """Tell `switchboard doctor` (and the operator) where the running parts are."""
    pbx, install = telephony.pbx, telephony.installation
    assert pbx is not None and install is not None and pbx.process is not None
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "pid": os.getpid(),
        "dashboard_url": settings.origin,
        "asterisk_kind": install.kind,
        "asterisk_where": install.where,
        "asterisk_pid": pbx.process.pid,
        "ari_url": pbx.ari_url,
        "ari_user": pbx.spec.ari_user,
        "ari_password": pbx.spec.ari_password,
        "sip": f"udp:{pbx.spec.bind_address}:{pbx.sip_port}",
        "config_dir": str(pbx.host_root / "etc"),
        "log": str(pbx.log_file),
    }
    # Holds the ARI secret: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2)
    return path


async def telephony_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, telephony = app[SETTINGS], app[TELEPHONY]
    try:
        await start_telephony(settings, telephony)
    except BaseException:
        await stop_telephony(telephony)
        raise
    state = write_state(settings, telephony) if telephony.pbx else None
    _print_banner(settings, telephony)
    try:
        yield
    finally:
        telephony.status = "stopping"
        await stop_telephony(telephony)
        if state is not None:
            state.unlink(missing_ok=True)


def _print_banner(settings: Settings, telephony: Telephony) -> None:
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
    if telephony.carrier is not None:
        lines.append(
            f"  Test caller carrier Asterisk on udp 127.0.0.1:{telephony.carrier.sip_port}"
        )
    lines += ["  `switchboard doctor` reports what runs; Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


# ---- handlers --------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    telephony = request.app[TELEPHONY]
    body = {
        "status": telephony.status,
        "asterisk": telephony.installation.version if telephony.installation else None,
    }
    code = 200 if telephony.status in ("ok", "external") else 503
    return web.json_response(body, status=code)


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[METRICS])
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def index(request: web.Request) -> web.Response:
    return web.Response(
        text="Switchboard is running. The agent dashboard arrives with the agent desk issue.\n"
    )


def build_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[TELEPHONY] = Telephony()
    registry = CollectorRegistry()
    app[METRICS] = registry
    up = Gauge("switchboard_asterisk_up", "1 while the PBX answers", registry=registry)
    up.set_function(lambda: 1.0 if app[TELEPHONY].status in ("ok", "external") else 0.0)
    app.cleanup_ctx.append(telephony_ctx)
    app.router.add_get("/", index)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app
