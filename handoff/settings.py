"""Typed settings: defaults < TOML file < environment < command line.

Every value is checked at start-up and a wrong one stops Switchboard with a message
that names the key (``asterisk.sip_port: 'abc' is not an integer``), instead of a
half-started PBX. Secrets have no defaults; listeners bind 127.0.0.1 unless told
otherwise.

Environment: ``SWITCHBOARD_<SECTION>__<KEY>`` (e.g. ``SWITCHBOARD_SERVER__PORT=8081``),
plus the two short forms ``SWITCHBOARD_ASTERISK`` (asterisk.source) and
``SWITCHBOARD_CACHE`` (asterisk.cache_dir). Lists, so a container needs no file:

- a list of tables takes the entry's index after its name, one variable per key
  (``SWITCHBOARD_TRUNKS__0__NAME=itsp``, ``SWITCHBOARD_TRUNKS__0__HOST=192.0.2.10``);
  an index the file has changes that entry's keys, the next index adds one;
- a list of values is comma-separated (``…__CODECS=ulaw,alaw``; empty: no values).

Not one JSON value per list: a compose file then holds JSON inside YAML with two kinds
of quoting, one secret (a trunk's password) cannot come from its own variable, and an
error would name the whole list rather than the one variable that is wrong. The command
line takes the same paths with dots (``--set trunks.0.host=192.0.2.11``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from handoff import tls
from handoff.logs import LOG_FORMATS
from handoff.settings_layers import SettingsError, _build, apply_layers
from handoff.trunks import Trunk, TrunkAuth
from pbx.asterisk_config import NodePeer, check_max_calls, check_rtp_range, default_max_calls
from pbx.config_values import ConfigValueError, check_host, check_name, check_port, check_realm
from pbx.dashboards_edge import DashboardsSpec, NodeDashboard
from pbx.kamailio_config import EdgeNode, EdgePhone, EdgeSpec

# routing.max_active_calls' default: see RoutingSettings.
ACTIVE_CALLS_PER_CORE = 20

__all__ = ["Settings", "SettingsError", "_build", "apply_layers", "load", "validate"]


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # The browser origin the dashboard is served from, checked on every WebSocket
    # handshake and state-changing request; empty means http(s)://host:port.
    public_origin: str = ""
    # HTTPS (PEM files, the chain after the certificate in tls_cert): agents' browsers
    # grant the microphone only to secure pages. Without them, serve plain HTTP behind
    # a reverse proxy that terminates TLS (public_origin then names the proxy).
    tls_cert: str = ""
    tls_key: str = ""
    # Reverse proxies (addresses or networks) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed: the login throttle and the audit log then see the
    # agent's own address. From any other peer those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseSettings:
    # SQLite in the data folder by default; PostgreSQL in production
    # (postgresql+psycopg://user:pass@host/db).
    url: str = ""


@dataclass(frozen=True)
class AsteriskSettings:
    source: str = "auto"
    mirror: str = "http://deb.debian.org/debian"
    cache_dir: str = ""
    bind_address: str = "127.0.0.1"
    media_address: str = "127.0.0.1"
    # The digest realm phones see in the PBX's challenges: a neutral word that names no
    # software (a scanner learns nothing from it) unless the site has its own domain
    # (sip.example.com).
    sip_realm: str = "pbx"
    http_port: int = 8088
    sip_port: int = 5060
    ami_port: int = 5038
    # Simultaneous calls the PBX takes (Asterisk's maxcalls); 0: 50 per CPU core. The
    # RTP range below must carry them: 6 ports a call (caller, agent, and a second agent
    # or a supervisor, each an RTP and an RTCP port); 0: a free block that size.
    max_calls: int = 0
    rtp_start: int = 0
    rtp_end: int = 0
    country: str = "us"
    # The PBX's WSS listener for browser softphones (SIP over secure WebSocket); empty:
    # the dashboard's certificate (server.tls_cert) when it has one, else none.
    tls_cert: str = ""
    tls_key: str = ""
    # 0: any free port.
    tls_port: int = 8089
    # An Asterisk Switchboard does not start (source = its ARI URL): the folder
    # Switchboard writes that Asterisk's configuration to (shared with it, e.g. a
    # volume), and the folders as that Asterisk sees them: where it reads the files, its
    # own state (database, spool, logs), its modules and its sounds (astdatadir).
    config_dir: str = ""
    etc_dir: str = "/etc/asterisk"
    state_dir: str = "/var/lib/switchboard-asterisk"
    modules_dir: str = "/usr/lib/asterisk/modules"
    share_dir: str = "/var/lib/asterisk"

    @property
    def external(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    @property
    def call_limit(self) -> int:
        return self.max_calls or default_max_calls()


@dataclass(frozen=True)
class TrunkSettings:
    """A ``[[trunks]]`` table: shown read-only on the admin page, tried before the
    trunks the admin page and the CLI add (handoff.trunks)."""

    name: str = "carrier"
    host: str = "127.0.0.1"
    port: int = 5060
    # "ip": the carrier is recognised by host:port; "register": we register to it with
    # username and password (digest), and it challenges our calls with them too.
    auth: str = "ip"
    username: str = ""
    password: str = field(default="", repr=False)
    # The number the carrier shows for our calls out; from_user is its older name.
    caller_id: str = ""
    from_user: str = ""
    codecs: tuple[str, ...] = ("ulaw", "alaw")
    # Numbers allowed out through this trunk (e.g. "_0[1-7]XXXXXXXX"); none: nothing
    # goes out through it. International and premium-rate numbers also need these:
    allow_international: bool = False
    allow_premium: bool = False
    patterns: tuple[str, ...] = ()
    enabled: bool = True

    def trunk(self) -> Trunk:
        return Trunk(
            name=self.name, host=self.host, port=self.port, auth=TrunkAuth(self.auth),
            username=self.username, password=self.password,
            caller_id=self.caller_id or self.from_user, codecs=self.codecs,
            patterns=self.patterns, allow_international=self.allow_international,
            allow_premium=self.allow_premium, enabled=self.enabled, source="settings",
        )


@dataclass(frozen=True)
class DemoSettings:
    # The demo set-up `make run` gives a new user: a built-in carrier Asterisk that
    # places test calls, demo agents and the reference receptionist.
    enabled: bool = True
    test_caller: bool = True
    # The demo carrier's RTP ports: it places the calls the PBX takes, so its range must
    # carry asterisk.max_calls too; 0: a free block that size.
    rtp_start: int = 0
    rtp_end: int = 0


@dataclass(frozen=True)
class DeskSettings:
    # Seconds an available agent spends in wrap-up after their part of a call (notes,
    # follow-up) before the next card; 0 turns it off. The agent can end it early.
    wrap_up_s: int = 15
    # The longest voicemail a caller may leave (an assistant whose fallback is voicemail)
    # before the call is ended for them.
    voicemail_max_s: int = 120
    # Browser-phone agents keep one call to their phone open while on duty, parked
    # between calls, so Accept is a bridge move rather than a new WebRTC call
    # (handoff.live.lines). false: every Accept rings the browser, as desk phones do.
    open_line: bool = True
    # The zone every page shows times in (an IANA name, e.g. "Europe/Paris"): a call
    # centre's people read the clock on the wall, wherever the server is. Empty: the
    # server's own zone (/etc/localtime).
    time_zone: str = ""


@dataclass(frozen=True)
class SecuritySettings:
    # An address that fails SIP authentication block_after times within block_window_s
    # is refused by the PBX for block_for_s (web.sip_blocks); block_after = 0: never.
    block_after: int = 20
    block_window_s: int = 300
    block_for_s: int = 3600
    # Networks never blocked: an office's NAT address, a monitoring host (CIDR).
    never_block: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordingsSettings:
    # Days a call's recording is kept after the call ended; 0 keeps them without limit.
    # The call stays in the history; only its audio goes (checked every hour).
    keep_days: int = 0


@dataclass(frozen=True)
class RoutingSettings:
    # A call to a number no enabled assistant answers (a disabled assistant's numbers
    # too): "reject" refuses it (the carrier hears 404, unallocated number), or the name
    # of the assistant that takes such calls. Either way the log names the number.
    unknown_numbers: str = "reject"
    # Calls the controller holds at once (callers with the AI, in a menu or with a
    # person); the next caller is refused at once with SIP 503, so the carrier can try
    # elsewhere, rather than answered into the silence of an overloaded box. 0: 20 per
    # CPU core, about where one box stopped being clean with recorded AI calls (issue 14:
    # 25 clean, 50 late and missing frames, on 2 cores). `switchboard bench capacity`
    # (never more than asterisk.max_calls) finds this machine's knee.
    max_active_calls: int = 0


@dataclass(frozen=True)
class ClusterNodeSettings:
    """A ``[[cluster.nodes]]`` table: one Asterisk node behind the edge."""

    name: str = "node"
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    # Its dashboard, as the edge reaches it (cluster.edge_https_port): its server.host
    # and server.port; empty host: sip_host.
    dashboard_host: str = ""
    dashboard_port: int = 8080


@dataclass(frozen=True)
class ClusterSettings:
    # Kamailio, the SIP edge carriers send their calls to: it dispatches each call to a
    # node that answers OPTIONS (pbx.kamailio_config). No nodes: no cluster, one box.
    edge_address: str = "127.0.0.1"
    edge_port: int = 5060
    # Where Kamailio reads its rendered files and keeps its control socket.
    edge_config_dir: str = "/etc/kamailio"
    edge_run_dir: str = "/run/kamailio"
    # Seconds between OPTIONS to each node: about how long a dead node still gets calls.
    probe_interval_s: int = 2
    # Where calls may come from (your carriers' SIP servers: addresses or networks);
    # the edge refuses anyone else's.
    carriers: tuple[str, ...] = ()
    nodes: tuple[ClusterNodeSettings, ...] = ()
    # The node `switchboard run` is on this machine (one of nodes' names): its
    # controller holds the node's lease in the shared database and names its calls
    # with it; empty: not a node of a cluster.
    node: str = ""
    # Seconds a node's calls are kept after its controller last renewed its lease
    # (renewed every third of it); past that a surviving node ends them as pbx_lost.
    lease_s: int = 10
    # Browser softphones register to the edge too, over secure WebSocket on this TCP
    # port of edge_address (0: none there; a browser registers to its node's Asterisk).
    # edge_wss_host: the name browsers dial, which the certificate names (empty:
    # edge_address). The certificate and key (PEM): empty, the dashboard's
    # (server.tls_cert and tls_key). Read on the edge's machine only (`config edge`).
    edge_wss_port: int = 0
    edge_wss_host: str = ""
    edge_tls_cert: str = ""
    edge_tls_key: str = ""
    # Agents' dashboards at the edge too: HTTPS on this TCP port of edge_address (0:
    # none; each agent opens a node's dashboard), with the WebSocket's certificate,
    # HAProxy in front of every node's dashboard (pbx.dashboards_edge). Agents open
    # https://edge_wss_host:edge_https_port, which is every node's origin then.
    edge_https_port: int = 0

    @property
    def phones_edge(self) -> str:
        """On a node of a cluster, the edge ("host:port") agents' desk phones register
        to and the node reaches them through; empty on a single box."""
        if not self.node:
            return ""
        host = f"[{self.edge_address}]" if ":" in self.edge_address else self.edge_address
        return f"{host}:{self.edge_port}"

    @property
    def browsers_edge(self) -> str:
        """On a node of a cluster whose edge has a WebSocket, where agents' browsers
        register (wss://host:port); empty otherwise (they register to this node)."""
        if not self.node or not self.edge_wss_port:
            return ""
        host = self.edge_wss_host or self.edge_address
        return f"wss://{f'[{host}]' if ':' in host else host}:{self.edge_wss_port}"

    @property
    def dashboards_origin(self) -> str:
        """The origin agents open their desk at when the edge serves the dashboards
        (https://host:port, the host the certificate names); empty otherwise."""
        if not self.edge_https_port:
            return ""
        host = self.edge_wss_host or self.edge_address
        return f"https://{f'[{host}]' if ':' in host else host}:{self.edge_https_port}"

    def edge(self) -> EdgeSpec:
        return EdgeSpec(
            listen_address=self.edge_address, port=self.edge_port,
            nodes=tuple(EdgeNode(n.name, n.sip_host, n.sip_port) for n in self.nodes),
            carriers=self.carriers, config_dir=self.edge_config_dir,
            run_dir=self.edge_run_dir, probe_interval_s=self.probe_interval_s,
            lease_s=self.lease_s, wss_port=self.edge_wss_port, tls_cert=self.edge_tls_cert,
            tls_key=self.edge_tls_key,
        )

    def peers(self) -> tuple[NodePeer, ...]:
        """The other nodes, which this node's Asterisk has a trunk to (a handoff whose
        agent is on another node than its caller): none off a cluster."""
        if not self.node:
            return ()
        return tuple(NodePeer(n.name, n.sip_host, n.sip_port) for n in self.nodes
                     if n.name != self.node)


def _check_node(cluster: ClusterSettings) -> None:
    if not cluster.node:
        return
    check_name("cluster.node", cluster.node)
    names = [node.name for node in cluster.nodes]
    if names and cluster.node not in names:
        raise ConfigValueError("cluster.node", f"{cluster.node!r} is none of cluster.nodes' "
                               f"names ({', '.join(names)})")
    if not 3 <= cluster.lease_s <= 300:
        raise ConfigValueError("cluster.lease_s", f"{cluster.lease_s}: 3 to 300 seconds")


@dataclass(frozen=True)
class Settings:
    data_dir: str = "var"
    log_level: str = "info"
    # "text" for a terminal, "json" (one object per line, with call_id, handoff_id and
    # agent fields) for a log collector.
    log_format: str = "text"
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    desk: DeskSettings = field(default_factory=DeskSettings)
    recordings: RecordingsSettings = field(default_factory=RecordingsSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    trunks: tuple[TrunkSettings, ...] = ()
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def active_call_limit(self) -> int:
        """routing.max_active_calls, or its default within what Asterisk lets in."""
        return self.routing.max_active_calls or min(
            ACTIVE_CALLS_PER_CORE * (os.cpu_count() or 1), self.asterisk.call_limit)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_path / 'switchboard.db'}"

    @property
    def origin(self) -> str:
        """The origin agents' browsers open the dashboard at: server.public_origin, else on
        a node whose edge serves the dashboards the edge's (they reach it through there),
        else this listener's."""
        scheme = "https" if self.server.tls_cert else "http"
        return (self.server.public_origin.rstrip("/")
                or (self.cluster.dashboards_origin if self.cluster.node else "")
                or f"{scheme}://{self.server.host}:{self.server.port}")

    @property
    def origin_not_the_edge_s(self) -> str:
        """On a node whose edge serves the dashboards, why its origin (set by hand) is
        wrong; empty when it is the edge's, or there is no such edge."""
        edge = self.cluster.dashboards_origin
        if not (self.cluster.node and edge) or self.origin == edge:
            return ""
        return (f"the edge serves the dashboards at {edge}, but this node's origin is "
                f"{self.origin} (server.public_origin): desks opened at the edge would be "
                "refused their live updates and every change; leave public_origin empty "
                "on a node, or set it to the edge's")

    @property
    def trusted_proxies(self) -> tuple[str, ...]:
        """server.trusted_proxies, and on a node whose edge serves the dashboards the
        edge's address: every agent's request comes from there."""
        cluster = self.cluster
        edge = (cluster.edge_address,) if cluster.node and cluster.edge_https_port else ()
        return (*self.server.trusted_proxies,
                *(p for p in edge if p not in self.server.trusted_proxies))

    def dashboards(self) -> DashboardsSpec:
        """HAProxy on the edge in front of every node's dashboard, with the edge's
        certificate or else the dashboard's (as the browsers' WebSocket there)."""
        cluster = self.cluster
        cert, key = ((cluster.edge_tls_cert, cluster.edge_tls_key) if cluster.edge_tls_cert
                     else (self.server.tls_cert, self.server.tls_key))
        return DashboardsSpec(
            cluster.edge_address, cluster.edge_https_port,
            tuple(NodeDashboard(n.name, n.dashboard_host or n.sip_host, n.dashboard_port)
                  for n in cluster.nodes),
            tls_cert=cert, tls_key=key, config_dir=cluster.edge_config_dir,
            run_dir=cluster.edge_run_dir)

    @property
    def local_url(self) -> str:
        """The dashboard's own listener as a client on this machine reaches it (the
        receptionist's control API): not the public origin, which may be a proxy."""
        scheme = "https" if self.server.tls_cert else "http"
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.server.host, self.server.host)
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.server.port}"

    def edge(self, phones: tuple[EdgePhone, ...] = ()) -> EdgeSpec:
        """The cluster's edge with these phones' accounts, challenging them in the nodes'
        realm and blocking password guessers as the nodes do (security.block_*); its
        browsers' WebSocket with its own certificate or else the dashboard's (the name
        agents open the desk by is often the one they reach the edge by)."""
        sec, cluster = self.security, self.cluster
        spec = replace(cluster.edge(), phones=phones, realm=self.asterisk.sip_realm,
                       block_after=sec.block_after, block_window_s=sec.block_window_s,
                       block_for_s=sec.block_for_s, never_block=sec.never_block)
        if cluster.edge_wss_port and not cluster.edge_tls_cert:
            spec = replace(spec, tls_cert=self.server.tls_cert, tls_key=self.server.tls_key)
        return spec

    @property
    def pbx_certificate(self) -> tuple[str, str] | None:
        """(cert, key) of the PBX's WSS listener: its own, else the dashboard's (an https
        page may not open a ws:// socket, so a dashboard on TLS needs a PBX on TLS)."""
        ast, server = self.asterisk, self.server
        if ast.tls_cert:
            return ast.tls_cert, ast.tls_key
        if server.tls_cert:
            return server.tls_cert, server.tls_key
        return None


# ---- loading ------------------------------------------------------------------------


def load(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings from the layers; raises :class:`SettingsError`.

    A value from the environment or the command line that is wrong names where it came
    from (``… (from SWITCHBOARD_SERVER__PORT)``): in a container the variable is what the
    operator edits, not a key in a file they may not have.
    """
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {file}: {exc}") from exc
    origins = apply_layers(Settings, raw, os.environ if environ is None else environ,
                           overrides or {})
    settings: Settings = _build(Settings, raw, "")
    try:
        validate(settings)
    except SettingsError as exc:
        key = str(exc).partition(": ")[0]
        if key in origins:
            raise SettingsError(f"{exc} (from {origins[key]})") from exc
        raise
    return settings


def validate(settings: Settings) -> None:
    """Range and shape checks that a type alone cannot express."""
    try:
        check_host("server.host", settings.server.host)
        check_port("server.port", settings.server.port)
        ast = settings.asterisk
        check_host("asterisk.bind_address", ast.bind_address)
        check_host("asterisk.media_address", ast.media_address)
        check_realm("asterisk.sip_realm", ast.sip_realm)
        for key in ("http_port", "sip_port", "ami_port"):
            port = getattr(ast, key)
            if port != 0:
                check_port(f"asterisk.{key}", port)
        if ast.max_calls:
            check_max_calls("asterisk.max_calls", ast.max_calls)
        if settings.routing.max_active_calls:
            check_max_calls("routing.max_active_calls", settings.routing.max_active_calls)
        if settings.routing.max_active_calls > ast.call_limit:
            # Asterisk's own ceiling would refuse first, unseen by the log and metrics.
            raise ConfigValueError(
                "routing.max_active_calls", f"{settings.routing.max_active_calls} calls is "
                f"more than asterisk.max_calls lets in ({ast.call_limit})")
        for section, ports in (("asterisk", ast), ("demo", settings.demo)):
            if ports.rtp_start or ports.rtp_end:
                check_rtp_range(section, ports.rtp_start, ports.rtp_end,
                                max_calls=ast.call_limit)
        demo = settings.demo
        if (ast.rtp_start and demo.rtp_start and demo.rtp_start <= ast.rtp_end
                and ast.rtp_start <= demo.rtp_end):
            raise ConfigValueError("demo.rtp_start", "the demo carrier's RTP ports overlap "
                                   "the PBX's (asterisk.rtp_start-rtp_end)")
        _check_certificates(settings)
        if ast.country not in ("us", "gb", "de", "fr"):
            raise ConfigValueError("asterisk.country", f"{ast.country!r}: one of us, gb, de, fr")
        names: set[str] = set()
        for i, trunk in enumerate(settings.trunks):
            if trunk.auth not in tuple(TrunkAuth):
                raise ConfigValueError(f"trunks[{i}].auth", f"{trunk.auth!r}: ip or register")
            if trunk.caller_id and trunk.from_user:
                raise ConfigValueError(f"trunks[{i}].from_user", "from_user is the older "
                                       "name of caller_id: keep one")
            trunk.trunk().check(f"trunks[{i}]")
            if trunk.name in names:
                raise ConfigValueError(f"trunks[{i}].name", f"{trunk.name!r} is used twice")
            names.add(trunk.name)
        if settings.cluster.nodes:
            settings.edge().validate()
            if settings.cluster.edge_https_port:
                _check_dashboards(settings.cluster, settings.dashboards())
        _check_node(settings.cluster)
        if settings.cluster.edge_wss_host:
            check_host("cluster.edge_wss_host", settings.cluster.edge_wss_host)
        unknown = settings.routing.unknown_numbers
        if unknown != "reject":
            try:
                check_name("routing.unknown_numbers", unknown)
            except ConfigValueError:
                raise ConfigValueError("routing.unknown_numbers", f"{unknown!r}: 'reject' or "
                                       "the name of the assistant that takes them") from None
    except ConfigValueError as exc:
        raise SettingsError(str(exc)) from exc
    sec = settings.security
    for key, value, top in (("block_after", sec.block_after, 10_000),
                            ("block_window_s", sec.block_window_s, 86_400),
                            ("block_for_s", sec.block_for_s, 30 * 86_400)):
        if not 0 <= value <= top:
            raise SettingsError(f"security.{key}: {value}: 0 to {top}")
    for i, network in enumerate(sec.never_block):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(f"security.never_block[{i}]: {network!r} is not an address "
                                "or a network (10.0.0.0/8)") from None
    if settings.desk.time_zone:
        try:
            zoneinfo.ZoneInfo(settings.desk.time_zone)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise SettingsError(f"desk.time_zone: {settings.desk.time_zone!r} is not a time "
                                "zone (an IANA name such as Europe/Paris, or empty for the "
                                "server's)") from None
    if not 0 <= settings.desk.wrap_up_s <= 600:
        raise SettingsError(f"desk.wrap_up_s: {settings.desk.wrap_up_s}: 0 to 600 seconds")
    if not 5 <= settings.desk.voicemail_max_s <= 600:
        raise SettingsError(f"desk.voicemail_max_s: {settings.desk.voicemail_max_s}: 5 to "
                            "600 seconds")
    if not 0 <= settings.recordings.keep_days <= 36500:
        raise SettingsError(f"recordings.keep_days: {settings.recordings.keep_days}: 0 (keep "
                            "them all) to 36500 days")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"log_level: {settings.log_level!r}: debug, info, warning or error")
    if settings.log_format not in LOG_FORMATS:
        raise SettingsError(f"log_format: {settings.log_format!r}: text or json")
    for i, proxy in enumerate(settings.server.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError(f"server.trusted_proxies[{i}]: {proxy!r} is not an address "
                                "or a network (192.0.2.10, 10.0.0.0/8, ::1)") from None
    _check_origin(settings.server, settings.cluster.dashboards_origin
                  if settings.cluster.node else "")
    url = settings.database.url
    if url and not url.startswith(("sqlite", "postgresql")):
        raise SettingsError(f"database.url: {url.split(':')[0]!r}: use sqlite or postgresql")


def check_origin(origin: str) -> str:
    """``origin`` as browsers send it in Origin (scheme://host[:port], no slash)."""
    parts = urllib.parse.urlsplit(origin)
    if (parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ValueError(f"server.public_origin: {origin!r}: a scheme, a host and perhaps a "
                         "port, nothing more (https://desk.example.com:8443)")
    return f"{parts.scheme}://{parts.netloc}"


def _check_dashboards(cluster: ClusterSettings, spec: DashboardsSpec) -> None:
    spec.validate()
    taken = {cluster.edge_port: "edge_port", cluster.edge_wss_port: "edge_wss_port"}
    if spec.port in taken:
        # On the edge's one address: one TCP port cannot be two listeners.
        raise ConfigValueError("cluster.edge_https_port", f"{spec.port} is the edge's "
                               f"{taken[spec.port]} too")


def _check_origin(server: ServerSettings, edge_origin: str) -> None:
    """The dashboard accepts a WebSocket and a form only from its own origin (web.dashboard
    .guard), which is what agents' browsers send. Listening on every address, there is no
    one address to derive it from: browsers would send http://10.0.0.5:8080 and be
    refused, a dashboard that signs in and then does nothing, with nothing said why."""
    origin = server.public_origin
    if origin:
        try:
            check_origin(origin)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    elif server.host in ("0.0.0.0", "::", "[::]") and not edge_origin:
        # (A node whose edge serves the dashboards has the edge's origin.)
        raise SettingsError(f"server.public_origin: required when server.host is "
                            f"{server.host!r}: the address agents' browsers open "
                            "(https://desk.example.com:8443); the dashboard refuses requests "
                            "from any other origin. Or set server.host to that address.")


def _check_certificates(settings: Settings) -> None:
    """Both files of a pair or neither; each readable, the key the certificate's."""
    ast = settings.asterisk
    for section, cert, key in (("server", settings.server.tls_cert, settings.server.tls_key),
                               ("asterisk", ast.tls_cert, ast.tls_key),
                               ("cluster", settings.cluster.edge_tls_cert,
                                settings.cluster.edge_tls_key)):
        prefix = "edge_" if section == "cluster" else ""
        if bool(cert) != bool(key):
            missing = f"{prefix}tls_key" if cert else f"{prefix}tls_cert"
            raise ConfigValueError(f"{section}.{missing}",
                                   f"{prefix}tls_cert and {prefix}tls_key go together")
    if settings.server.tls_cert:
        tls.server_context("server", settings.server.tls_cert, settings.server.tls_key)
    # An Asterisk someone else runs reads its files on its own machine.
    if ast.tls_cert and not ast.external:
        tls.server_context("asterisk", ast.tls_cert, ast.tls_key)
    if ast.tls_port:
        check_port("asterisk.tls_port", ast.tls_port)
