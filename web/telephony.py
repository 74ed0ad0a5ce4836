"""Telephony: the Asterisk instances `run` starts (the PBX, its configuration rendered
from the store, and the demo carrier that places test calls), or re-attaches to when a
controller that crashed left them running with their calls, or the Asterisk someone
else runs (asterisk.source = its ARI URL: web.external); and the state file that tells
`switchboard doctor`, the operator and the next run where they are."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from handoff.agents import EndpointKind
from handoff.settings import Settings, SettingsError
from handoff.store import Store
from handoff.trunks import Trunk
from pbx import runtime
from pbx.asterisk_config import (
    InboundRoute,
    InstanceSpec,
    Ports,
    SipAgent,
    TlsListener,
    spec_from_dict,
    spec_to_dict,
)
from pbx.demo_caller import install_voice
from pbx.external import ExternalAsterisk, split_ari_url
from pbx.kamailio_config import EdgePhone
from pbx.ports import claim_port
from pbx.trunk_config import SipTrunk
from web.demo import CARRIER_TRUNK, demo_caller_voice
from web.doctor import read_state, state_file
from web.external import Credentials, credentials, external_dirs, pbx_spec

log = logging.getLogger(__name__)


@dataclass
class Telephony:
    """What `run` started or re-attached: the PBX and, for the demo, the carrier."""

    installation: runtime.Installation | None = None
    pbx: runtime.AsteriskInstance | ExternalAsterisk | None = None
    carrier: runtime.AsteriskInstance | None = None
    adopted: bool = False
    status: str = "starting"
    # The trunks that are not the store's: the settings file's, and the demo carrier's
    # while it runs. Read-only on the admin page; tried first by calls out.
    fixed_trunks: tuple[Trunk, ...] = ()
    # A cluster's node whose edge has browsers' WebSocket: where browsers register
    # (cluster.browsers_edge), so any node reaches them there; empty: this PBX.
    browsers_edge: str = ""

    def softphone_url(self) -> str | None:
        """Where browser softphones register: the cluster's edge when it takes them, else
        the PBX's SIP WebSocket (wss with TLS).

        The TLS listener is on every address, so the page dials the host it was loaded
        from (web.dashboard.softphone): the name its certificate covers."""
        if self.pbx is None:
            return None
        if self.browsers_edge:
            return self.browsers_edge
        spec = self.pbx.spec
        if spec.tls is not None:
            return f"wss://{spec.tls.bind}:{spec.tls.port}/ws"
        return f"ws://{spec.bind_address}:{spec.ports.http}/ws"


async def start_telephony(settings: Settings, store: Store, telephony: Telephony) -> None:
    ast = settings.asterisk
    telephony.browsers_edge = settings.cluster.browsers_edge
    cache = Path(ast.cache_dir) if ast.cache_dir else None
    install = await asyncio.to_thread(runtime.locate, ast.source, cache, ast.mirror)
    telephony.installation = install
    if install.kind == "external":
        if settings.demo.test_caller:
            log.info("demo.test_caller: no demo carrier beside an Asterisk Switchboard "
                     "does not start")
        telephony.fixed_trunks = fixed_trunks(settings, None)
        telephony.pbx = await connect_external(settings, store, telephony.fixed_trunks)
        telephony.installation = replace(install, version=telephony.pbx.version)
        telephony.status = "ok"
        return
    if await reattach(settings, telephony, install):
        return
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
    telephony.fixed_trunks = fixed_trunks(
        settings, carrier_ports.sip if carrier_ports is not None else None)
    routes, agents, trunks = await directory(store, telephony.fixed_trunks)
    telephony.pbx = runtime.new_instance(
        install, instance_name("pbx", settings), settings.data_path, ports=pbx_ports,
        ephemeral=False, max_calls=ast.call_limit,
        bind_address=ast.bind_address, media_address=ast.media_address,
        ice_permit=ice_networks(ast.media_address),
        sip_realm=ast.sip_realm, country=ast.country,
        tls=pbx_tls(settings, avoid=pbx_ports),
        trunks=trunks, routes=routes, agents=agents, route_unknown=True,
        refuse_without_app=bool(settings.cluster.node),
        peers=settings.cluster.peers(),
        agents_edge=settings.cluster.phones_edge,
        browsers_at_edge=bool(settings.cluster.browsers_edge),
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


def pbx_tls(settings: Settings, avoid: Ports) -> TlsListener | None:
    """The PBX's WSS listener for softphones off this machine, on every address (agents
    dial it from their own machines), with its own certificate or the dashboard's."""
    certificate = settings.pbx_certificate
    if certificate is None:
        return None
    port = claim_port("asterisk.tls_port", settings.asterisk.tls_port,
                              avoid=frozenset({avoid.http, avoid.sip, avoid.ami}))
    return TlsListener(*certificate, port=port)


def ice_networks(media_address: str) -> tuple[str, ...]:
    """Where the PBX offers browsers ICE host candidates from: only media_address when it
    is one of this host's own addresses on a network (a LAN), so an agent's browser is
    not sent to a docker bridge or a second interface it cannot reach; every interface
    otherwise (Asterisk never offers a loopback candidate, so restricting ICE to
    127.0.0.1 would leave browsers on this machine no media path at all)."""
    try:
        address = ipaddress.ip_address(media_address)
    except ValueError:
        return ()
    if address.is_loopback or address.is_unspecified:
        return ()
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((media_address, 0))
        except OSError:
            # Not this host's (a NAT's public address): the host's own candidates, and
            # the NAT must forward the RTP range to this host.
            return ()
    return (f"{address}/{address.max_prefixlen}",)


def instance_name(role: str, settings: Settings) -> str:
    """One Asterisk tree per data folder: two installations (a demo and a test run)
    on one machine never share a configuration or a spool."""
    digest = hashlib.sha256(str(settings.data_path).encode()).hexdigest()[:8]
    return f"{role}-{digest}"


# What the demo carrier answers and calls from: any national number (its test callers,
# whoever an agent calls back). International and premium numbers stay refused.
DEMO_CARRIER_PATTERNS = ("_X.", "_+X.")


def fixed_trunks(settings: Settings, demo_carrier_port: int | None) -> tuple[Trunk, ...]:
    """The settings file's trunks, then the demo carrier's (when it runs)."""
    trunks = [t.trunk() for t in settings.trunks]
    if demo_carrier_port is not None:
        trunks.append(Trunk(CARRIER_TRUNK, "127.0.0.1", demo_carrier_port,
                            patterns=DEMO_CARRIER_PATTERNS, source="demo"))
    return tuple(trunks)


async def directory(
    store: Store, fixed: Sequence[Trunk],
) -> tuple[tuple[InboundRoute, ...], tuple[SipAgent, ...], tuple[SipTrunk, ...]]:
    """Everything the PBX's configuration holds that can change while it runs: numbers,
    agents' endpoints, and every enabled trunk (a disabled one is not rendered: its
    registration ends and calls from it are refused)."""
    routes, agents = await routes_and_agents(store)
    async with store.transaction() as tx:
        trunks = tuple(t.sip() for t, _ in await tx.trunks.in_order(fixed) if t.enabled)
    return routes, agents, trunks


async def external_spec(settings: Settings, store: Store, account: Credentials,
                        fixed: Sequence[Trunk]) -> InstanceSpec:
    """The configuration of an Asterisk Switchboard does not start, every file's content
    from the store too: assistants' numbers (and the catch-all for the others), enabled
    agents, trunks, and the addresses blocked now (`config render` and `run` alike)."""
    routes, agents, trunks = await directory(store, fixed)
    async with store.transaction() as tx:
        blocked = tuple(sorted({b.address for b in await tx.blocks.active()}))
    return pbx_spec(settings, external_dirs(settings), account, routes=routes,
                    agents=agents, trunks=trunks, blocked=blocked)


async def connect_external(settings: Settings, store: Store,
                           fixed: Sequence[Trunk]) -> ExternalAsterisk:
    """The Asterisk at asterisk.source, checked (version, modules), given the store's
    configuration in asterisk.config_dir and reloaded, then checked to have taken it."""
    ast = settings.asterisk
    if not ast.config_dir:
        raise SettingsError(
            "asterisk.config_dir: must be set for an Asterisk Switchboard does not start: "
            "the folder (a shared volume) Switchboard writes that Asterisk's configuration "
            "to, so people, numbers and trunks added later reach it without a restart")
    url, host, _, _ = split_ari_url(ast.source)
    spec = await external_spec(settings, store, credentials(settings), fixed)
    pbx = ExternalAsterisk(spec=spec, config_dir=Path(ast.config_dir), ari_url=url,
                           ami_host=host)
    try:
        await pbx.check()
        pbx.write()
        await pbx.reload()
        await pbx.check_taken()
    except BaseException:
        await pbx.stop()
        raise
    log.info("using %s at %s; its configuration is written to %s", pbx.version, url,
             ast.config_dir)
    return pbx


def through_edge(telephony: Telephony, sip_user: str) -> bool:
    """Whether this SIP user's phone registers to the cluster's edge (a desk phone on a
    node, or a browser when the edge has its WebSocket), not to this node's Asterisk."""
    pbx = telephony.pbx
    return pbx is not None and any(agent.name == sip_user and pbx.spec.through_edge(agent)
                                   for agent in pbx.spec.agents)


async def routes_and_agents(
    store: Store,
) -> tuple[tuple[InboundRoute, ...], tuple[SipAgent, ...]]:
    """Enabled assistants answer their numbers (a disabled one's fall to the catch-all,
    where routing.unknown_numbers applies); every enabled agent gets their SIP endpoint
    (a disabled one's is not rendered, so after the reload Asterisk refuses their
    REGISTER)."""
    async with store.transaction() as tx:
        assistants = await tx.assistants.listed()
        numbers = await tx.assistants.numbers()
        agents = await tx.agents.all()
    routes = tuple(InboundRoute(pattern, a.name)
                   for a in assistants if a.enabled for pattern in numbers.get(a.id, ()))
    endpoints = tuple(
        SipAgent(a.sip_user, a.sip_password,
                 "webrtc" if a.endpoint_kind is EndpointKind.WEBRTC else "deskphone",
                 a.display_name)
        for a in agents if a.enabled
    )
    return routes, endpoints


async def edge_phones(store: Store, browsers: bool = False) -> tuple[EdgePhone, ...]:
    """The phones' accounts a cluster's edge registers: every enabled agent's on a desk
    phone, and with ``browsers`` (the edge's WebSocket) every browser phone's too (else a
    browser registers to a node's WebSocket)."""
    _, endpoints = await routes_and_agents(store)
    return tuple(EdgePhone(a.name, a.password) for a in endpoints
                 if a.kind == "deskphone" or browsers)


# How soon a running PBX takes a change the CLI wrote to the database (a person
# disabled from the server's shell): the CLI does not talk to the running product.
DIRECTORY_CHECK_S = 10.0


async def sync_directory(store: Store, pbx: runtime.AsteriskInstance | ExternalAsterisk,
                         fixed: Sequence[Trunk] | None = None) -> bool:
    """Give the PBX the endpoints, numbers and (given the ``fixed`` trunks) trunks the
    store has now, if they changed: a disabled person's endpoint goes, so Asterisk
    refuses their phone's next REGISTER; a trunk added registers. True if it reloaded."""
    if fixed is None:
        routes, agents = await routes_and_agents(store)
        trunks = pbx.spec.trunks
    else:
        routes, agents, trunks = await directory(store, fixed)
    if (routes, agents, trunks) == (pbx.spec.routes, pbx.spec.agents, pbx.spec.trunks):
        return False
    await pbx.apply_directory(routes, agents, trunks)
    return True


async def follow_directory(apply: Callable[[], Awaitable[bool]],
                           every_s: float = DIRECTORY_CHECK_S) -> None:
    """Changes the admin page makes apply at once (endpoints_changed); those of
    `switchboard user`, `assistant` and `trunk` are applied here, within every_s."""
    while True:
        await asyncio.sleep(every_s)
        try:
            if await apply():
                log.info("took the people, assistants and trunks changed in the database")
        except Exception:
            log.exception("the people and assistants changed in the database could not be "
                          "applied; retrying in %.0f s", every_s)


async def reattach(
    settings: Settings, telephony: Telephony, install: runtime.Installation
) -> bool:
    """Take over the Asterisk instances a crashed run left behind, with their calls."""
    state = read_state(settings)
    if state is None:
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
    carrier = telephony.carrier
    telephony.fixed_trunks = fixed_trunks(
        settings, carrier.spec.ports.sip if carrier is not None else None)
    log.warning("re-attached to the running Asterisk (pid %s): its calls go on",
                telephony.pbx.pid)
    telephony.adopted = True
    telephony.status = "ok"
    return True


async def stop_telephony(telephony: Telephony) -> None:
    for instance in (telephony.carrier, telephony.pbx):
        if instance is not None:
            await instance.stop()


def write_state(settings: Settings, telephony: Telephony) -> Path | None:
    """Tell `switchboard doctor`, the operator and a restarted run where things are."""
    pbx, install = telephony.pbx, telephony.installation
    if pbx is None or install is None:
        return None
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = isinstance(pbx, ExternalAsterisk)
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "dashboard_url": settings.origin,
        "asterisk_kind": install.kind,
        "asterisk_where": install.where,
        "asterisk_pid": pbx.pid,
        "ari_url": pbx.ari_url,
        "ari_user": pbx.spec.ari_user,
        "ari_password": pbx.spec.ari_password,
        "sip": f"udp:{pbx.spec.bind_address}:{pbx.spec.ports.sip}",
        "config_dir": str(pbx.config_dir),
        "log": str(pbx.log_file or ""),
    }
    # Only an Asterisk Switchboard started is re-attached to (or stopped) by a next run.
    for role, instance in (("pbx", None if external else pbx), ("carrier", telephony.carrier)):
        if isinstance(instance, runtime.AsteriskInstance):
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
