"""The settings' shape: each section's typed keys and their defaults, and ``Settings``,
the top that holds them and derives what several sections decide together (the origin
agents' browsers use, the edge's spec, the PBX's certificate).

Apart from loading and checking them (handoff.settings) so that what a setting means
reads in one place, next to its default; the cluster's sections are in
handoff.settings_cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from handoff.settings_cluster import ClusterSettings
from handoff.trunks import Trunk, TrunkAuth
from pbx.asterisk_config import default_max_calls
from pbx.dashboards_edge import DashboardsSpec, NodeDashboard
from pbx.kamailio_config import EdgePhone, EdgeSpec

# routing.max_active_calls' default: see RoutingSettings.
ACTIVE_CALLS_PER_CORE = 20


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
    # CPU core, under where one box stopped being clean with recorded AI calls and
    # handoffs (2 cores, the benchmark's rig on the same box: 35-45 clean, the knee at
    # 45-50). `switchboard bench capacity` (never more than asterisk.max_calls) finds
    # this machine's knee.
    max_active_calls: int = 0


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
