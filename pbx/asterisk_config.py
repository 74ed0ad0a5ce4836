"""Render the Asterisk configuration of one instance from ``asterisk-config/*.conf.j2``.

The templates are installed with this package as ``pbx/templates`` (a link to the
top-level asterisk-config/ in a checkout), so an installed Switchboard renders the same
files as a checkout does.

Every instance (the PBX, a test carrier) gets its own tree with its own ports and
freshly generated ARI/AMI secrets. Values that end up in Asterisk's config files are
checked here first, so that a wrong setting is reported by its name instead of as a
half-loaded Asterisk.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2

from pbx.config_values import (
    ConfigValueError,
    check_host,
    check_ip,
    check_name,
    check_pattern,
    check_port,
    check_realm,
    check_secret,
    check_trunk_secret,
    matching,
)
from pbx.trunk_config import SipTrunk, TrunkAccount

_CONTACT = re.compile(r"^sip:[A-Za-z0-9_.+-]{1,64}@[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")

# How many calls an Asterisk takes at once, and the RTP ports that takes. Every RTP
# stream takes an even port from rtp.conf's range and the odd one above it (RTCP), and a
# call holds up to three streams on the PBX at once: the caller's leg, the agent's, and a
# second agent's during a transfer or a supervisor listening in. The AI leg is
# AudioSocket over TCP and takes no RTP port.
RTP_STREAMS_PER_CALL = 3
RTP_PORTS_PER_CALL = 2 * RTP_STREAMS_PER_CALL
# Calls per CPU core when no limit is set: the 2-core reference machine took 75 to 100
# simultaneous calls in issue 8's load run, so 100 there; a bigger box takes more.
CALLS_PER_CORE = 50
MAX_CALLS_CEILING = 5000  # 30,000 RTP ports: about all a host's UDP port space can lend


def default_max_calls() -> int:
    return CALLS_PER_CORE * (os.cpu_count() or 1)


def rtp_ports_for(max_calls: int) -> int:
    """The size of an RTP range that carries ``max_calls`` calls."""
    return max_calls * RTP_PORTS_PER_CALL


def check_max_calls(key: str, value: int) -> int:
    if not 1 <= value <= MAX_CALLS_CEILING:
        raise ConfigValueError(key, f"{value}: 1 to {MAX_CALLS_CEILING} simultaneous calls")
    return value


def check_rtp_range(section: str, start: int, end: int, *, max_calls: int) -> None:
    """``section``.rtp_start-rtp_end must carry ``max_calls`` calls (asterisk.max_calls):
    an Asterisk that runs out of RTP ports refuses the next call ("couldn't allocate a
    port for RTP instance") while its call limit says it has room."""
    check_port(f"{section}.rtp_start", start)
    check_port(f"{section}.rtp_end", end)
    first = start + start % 2  # Asterisk puts RTP on even ports only
    calls = (end + 1 - first) // RTP_PORTS_PER_CALL
    if calls < max_calls:
        raise ConfigValueError(
            f"{section}.rtp_end",
            f"RTP ports {start}-{end} carry {max(calls, 0)} calls ({RTP_PORTS_PER_CALL} "
            "ports each: caller, agent, and a second agent or a supervisor), but "
            f"asterisk.max_calls is {max_calls}: end the range at "
            f"{first + rtp_ports_for(max_calls) - 1} or lower asterisk.max_calls",
        )


@dataclass(frozen=True)
class SipAgent:
    """An agent's phone: a browser softphone (``webrtc``) or a SIP desk phone."""

    name: str
    password: str
    kind: Literal["webrtc", "deskphone"] = "webrtc"
    display_name: str = ""
    # A desk phone that does not register (or a test phone) is reached at a fixed URI.
    contact: str = ""


@dataclass(frozen=True)
class InboundRoute:
    """Calls to ``pattern`` arriving from a trunk go to ``assistant`` in Stasis."""

    pattern: str
    assistant: str
    app: str = ""  # the Stasis app; the instance's own unless another app serves it


@dataclass(frozen=True)
class NodePeer:
    """Another node of the cluster: its Asterisk's SIP address. A handoff whose caller
    is on one node and whose agent is on the other crosses between them on a SIP leg
    (handoff.live.xnode), recognised by address alone, as a carrier's trunk is."""

    name: str
    host: str
    port: int = 5060

    @property
    def endpoint(self) -> str:
        # Prefixed: a node's name must not collide with a trunk's or an agent's.
        return f"peer-{self.name}"


@dataclass(frozen=True)
class Queue:
    """A classic app_queue queue, entered from the ``queues`` context by its name."""

    name: str
    members: tuple[str, ...]  # PJSIP endpoint names
    timeout: int = 20


class _UnderRoot:
    """A folder of an instance's tree, by its path below the tree's root."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __get__(self, dirs: Dirs, owner: type[Dirs]) -> str:
        return f"{dirs.root}/{self.path}"


@dataclass(frozen=True)
class Dirs:
    """Directories as Asterisk sees them (inside the chroot for the embedded runtime)."""

    root: str
    modules: str = "/usr/lib/x86_64-linux-gnu/asterisk/modules"
    data: str = "/usr/share/asterisk"
    # Where the .conf files are read from; inside the instance tree unless an external
    # Asterisk reads them from its own place (e.g. /etc/asterisk in a container).
    etc_dir: str = ""

    varlib = _UnderRoot("var/lib")
    spool = _UnderRoot("var/spool")
    run = _UnderRoot("var/run")
    log = _UnderRoot("var/log")

    @property
    def etc(self) -> str:
        return self.etc_dir or f"{self.root}/etc"

    def all(self) -> list[str]:
        return [self.etc, self.varlib, self.spool, self.run, self.log, f"{self.spool}/recording"]


@dataclass(frozen=True)
class Ports:
    http: int
    sip: int
    ami: int
    rtp_start: int
    rtp_end: int


@dataclass(frozen=True)
class TlsListener:
    """wss for browsers off localhost; a real certificate in production."""

    cert: str
    key: str
    bind: str = "0.0.0.0"
    port: int = 8089


@dataclass(frozen=True)
class InstanceSpec:
    name: str
    dirs: Dirs
    ports: Ports
    ari_user: str
    ari_password: str
    ami_user: str
    ami_secret: str
    app: str = "switchboard"
    bind_address: str = "127.0.0.1"
    media_address: str = "127.0.0.1"
    # The digest realm phones are challenged with (and keep their credentials under).
    sip_realm: str = "pbx"
    # Networks Asterisk may offer ICE host candidates from; empty: every interface.
    # Asterisk 22 never offers loopback candidates, so restricting ICE to 127.0.0.1
    # leaves a WebRTC call with no media path at all (measured); restrict to a LAN
    # instead where a host has several.
    ice_permit: tuple[str, ...] = ()
    country: str = "us"
    rtp_timeout: int = 30
    # A browser that dies mid-call sends no BYE, and Asterisk 22 keeps the call when its
    # SIP WebSocket closes: only the RTP timeout notices (measured: 29.8 s with 30).
    # A live softphone sends a packet every 20 ms even when muted, so 5 s is safe.
    webrtc_rtp_timeout: int = 5
    max_calls: int = field(default_factory=default_max_calls)
    trunks: tuple[SipTrunk, ...] = ()
    trunk_accounts: tuple[TrunkAccount, ...] = ()
    agents: tuple[SipAgent, ...] = ()
    routes: tuple[InboundRoute, ...] = ()
    queues: tuple[Queue, ...] = ()
    # The cluster's other nodes (cluster.nodes but this one's): a trunk to each, whose
    # calls in go to the controller as node legs of handoffs accepted there.
    peers: tuple[NodePeer, ...] = ()
    tls: TlsListener | None = None
    # Addresses refused before any authentication (PJSIP's ACL answers them 403): those
    # that kept failing it (web.sip_blocks). Plain addresses, no ranges.
    blocked: tuple[str, ...] = ()
    # The demo carrier's test caller (pbx/demo_caller.py): a dialplan that listens to the
    # greeting, presses 0 and speaks; rendered only on the carrier that places test calls.
    test_caller: bool = False
    # Calls from a trunk to a number no route names go to the Stasis app as "unknown",
    # so the controller applies its setting for them (a default assistant or a 404) and
    # logs the number; off, Asterisk answers such calls 404 itself, unlogged.
    route_unknown: bool = False
    # A node of a cluster behind the SIP edge: a call that finds no controller's app is
    # refused 503 at once (the edge tries the next node), rather than waiting up to 10 s
    # for a controller that may be gone.
    refuse_without_app: bool = False
    # On a cluster's node: the SIP edge (Kamailio, "host:port") agents' desk phones
    # register to. Each desk phone's AoR here is then the agent's address of record at
    # the edge, so the node calls the phone through the edge whichever node it last
    # spoke to, and qualifies it there (pbx.kamailio_config). Empty: phones register here.
    agents_edge: str = ""
    # The edge also has browsers' WebSocket (cluster.edge_wss_port): browser phones
    # register there too, and their AoR here is the edge's as a desk phone's is.
    browsers_at_edge: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def through_edge(self, agent: SipAgent) -> bool:
        """Whether this agent's phone is reached (and its state read) through the edge."""
        return bool(self.agents_edge) and not agent.contact and (
            agent.kind == "deskphone" or self.browsers_at_edge)

    def validate(self) -> None:
        check_name("asterisk.app", self.app)
        check_name("asterisk.ari_user", self.ari_user)
        check_name("asterisk.ami_user", self.ami_user)
        check_secret("asterisk.ari_password", self.ari_password)
        check_secret("asterisk.ami_secret", self.ami_secret)
        check_host("asterisk.bind_address", self.bind_address)
        check_host("asterisk.media_address", self.media_address)
        check_realm("asterisk.sip_realm", self.sip_realm)
        for key, port in (
            ("asterisk.http_port", self.ports.http),
            ("asterisk.sip_port", self.ports.sip),
            ("asterisk.ami_port", self.ports.ami),
        ):
            check_port(key, port)
        check_max_calls("asterisk.max_calls", self.max_calls)
        check_rtp_range("asterisk", self.ports.rtp_start, self.ports.rtp_end,
                        max_calls=self.max_calls)
        if self.country not in ("us", "gb", "de", "fr"):
            raise ConfigValueError("asterisk.country", f"{self.country!r}: one of us, gb, de, fr")
        seen: set[str] = set()
        for i, trunk in enumerate(self.trunks):
            trunk.check(f"trunks[{i}]")
            names = {trunk.name, f"{trunk.name}-auth"} if trunk.auth == "register" else {
                trunk.name}
            if names & seen:
                raise ConfigValueError(f"trunks[{i}].name", f"{trunk.name!r} is used twice")
            seen |= names
        for i, account in enumerate(self.trunk_accounts):
            check_name(f"trunk_accounts[{i}].username", account.username)
            check_trunk_secret(f"trunk_accounts[{i}].password", account.password)
            if account.username in seen:
                raise ConfigValueError(f"trunk_accounts[{i}].username",
                                       f"{account.username!r} is used twice")
            seen.add(account.username)
        for i, peer in enumerate(self.peers):
            check_name(f"peers[{i}].name", peer.name)
            check_host(f"peers[{i}].host", peer.host)
            check_port(f"peers[{i}].port", peer.port)
            if peer.endpoint in seen:
                raise ConfigValueError(f"peers[{i}].name", f"{peer.endpoint!r} is used twice")
            seen.add(peer.endpoint)
        for i, agent in enumerate(self.agents):
            check_name(f"agents[{i}].sip_user", agent.name)
            check_secret(f"agents[{i}].sip_password", agent.password)
            if agent.contact:
                matching(_CONTACT, f"agents[{i}].contact", agent.contact,
                          "expected sip:user@host:port")
            if agent.kind not in ("webrtc", "deskphone"):
                raise ConfigValueError(f"agents[{i}].kind", "webrtc or deskphone")
            if agent.name in seen:
                raise ConfigValueError(f"agents[{i}].sip_user", f"{agent.name!r} is used twice")
            seen.add(agent.name)
        for i, route in enumerate(self.routes):
            check_pattern(f"assistants[{i}].number", route.pattern)
            check_name(f"assistants[{i}].name", route.assistant)
            if route.app:
                check_name(f"assistants[{i}].app", route.app)
        if self.agents_edge:
            edge_host, _, edge_port = self.agents_edge.rpartition(":")
            check_host("cluster.edge_address", edge_host.strip("[]"))
            check_port("cluster.edge_port", int(edge_port) if edge_port.isdigit() else -1)
        for i, address in enumerate(self.blocked):
            check_ip(f"blocked[{i}]", address)
        for i, queue in enumerate(self.queues):
            check_name(f"queues[{i}].name", queue.name)
            for member in queue.members:
                check_name(f"queues[{i}].members", member)


def spec_to_dict(spec: InstanceSpec) -> dict[str, object]:
    """A JSON-able copy, so a restarted controller can re-attach to a running instance."""
    return dataclasses.asdict(spec)


def spec_from_dict(data: dict[str, Any]) -> InstanceSpec:
    fields = dict(data)
    fields["dirs"] = Dirs(**fields["dirs"])
    fields["ports"] = Ports(**fields["ports"])
    fields["tls"] = TlsListener(**fields["tls"]) if fields.get("tls") else None
    fields["ice_permit"] = tuple(fields.get("ice_permit", ()))
    fields["blocked"] = tuple(fields.get("blocked", ()))
    for key, kind in (("agents", SipAgent), ("routes", InboundRoute),
                      ("trunk_accounts", TrunkAccount)):
        fields[key] = tuple(kind(**item) for item in fields.get(key, ()))
    fields["trunks"] = tuple(SipTrunk(**{**t, "codecs": tuple(t.get("codecs", ("ulaw", "alaw")))})
                             for t in fields.get("trunks", ()))
    fields["queues"] = tuple(
        Queue(**{**q, "members": tuple(q["members"])}) for q in fields.get("queues", ())
    )
    fields["peers"] = tuple(NodePeer(**p) for p in fields.get("peers", ()))
    return InstanceSpec(**fields)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _sanitize_display(text: str) -> str:
    return re.sub(r"[^\w .\'-]", "", text)[:40]


def render(spec: InstanceSpec) -> dict[str, str]:
    """Return ``{file name: text}`` for every .conf of the instance."""
    spec.validate()
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pbx", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    agents = [
        {"name": a.name, "password": a.password, "kind": a.kind,
         "display_name": _sanitize_display(a.display_name or a.name),
         "contact": f"sip:{a.name}@{spec.agents_edge}" if spec.through_edge(a) else a.contact,
         "edge": spec.through_edge(a)}
        for a in spec.agents
    ]
    context = {
        "name": spec.name,
        "app": spec.app,
        "dirs": spec.dirs,
        "max_calls": spec.max_calls,
        "country": spec.country,
        "http": {"bind": spec.bind_address, "port": spec.ports.http},
        "sip": {
            "bind": spec.bind_address,
            "port": spec.ports.sip,
            "media_address": spec.media_address,
            # Browsers on this machine (loopback) take any candidate; only a LAN address
            # is worth telling them in the SDP.
            "webrtc_media_address": "" if _is_loopback(spec.media_address)
            else spec.media_address,
            "realm": spec.sip_realm,
        },
        "ami": {
            "bind": "127.0.0.1",
            "port": spec.ports.ami,
            "user": spec.ami_user,
            "secret": spec.ami_secret,
        },
        "ari": {"user": spec.ari_user, "password": spec.ari_password},
        "rtp": {
            "start": spec.ports.rtp_start,
            "end": spec.ports.rtp_end,
            "ice_permit": list(spec.ice_permit),
            "timeout": spec.rtp_timeout,
            "webrtc_timeout": spec.webrtc_rtp_timeout,
        },
        "tls": spec.tls,
        "blocked": spec.blocked,
        "trunks": spec.trunks,
        "trunk_accounts": spec.trunk_accounts,
        "peers": spec.peers,
        "agents": agents,
        "routes": [
            {"pattern": r.pattern, "assistant": r.assistant, "app": r.app or spec.app}
            for r in spec.routes
        ],
        "queues": spec.queues,
        "test_caller": spec.test_caller,
        "route_unknown": spec.route_unknown,
        "refuse_without_app": spec.refuse_without_app,
    }
    out: dict[str, str] = {}
    for template in env.list_templates(filter_func=lambda name: name.endswith(".conf.j2")):
        out[template.removesuffix(".j2")] = env.get_template(template).render(context)
    for name, text in out.items():
        check_conf_syntax(name, text)
    return out


_SECTION = re.compile(r"^\[[^\]\s]+\](\([^)]*\))?\s*(;.*)?$")
_SETTING = re.compile(r"^\s*[A-Za-z_][\w.()-]*\s*(=>?|=)\s*.*$")


def check_conf_syntax(name: str, text: str) -> None:
    """Catch what would make Asterisk skip lines silently: a stray line, a bad header."""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            if not _SECTION.match(line):
                raise ConfigValueError(f"{name}:{lineno}", f"bad section header {line!r}")
            continue
        if not _SETTING.match(raw) and not line.startswith("same =>"):
            raise ConfigValueError(f"{name}:{lineno}", f"not a setting: {line!r}")


def write_tree(spec: InstanceSpec, host_root: Path, group: int | None = None) -> dict[str, str]:
    """Render and write the tree; ``host_root`` is where ``spec.dirs.root`` lives on the host.

    The files hold the ARI/AMI secrets: readable by their owner only, or also by
    ``group`` (the unprivileged account Asterisk runs as), which may read them but not
    change them.
    """
    for inside in spec.dirs.all():
        (host_root / Path(inside).relative_to(spec.dirs.root)).mkdir(parents=True, exist_ok=True)
    etc = host_root / "etc"
    if group is not None:
        os.chown(etc, -1, group)
        etc.chmod(0o750)
    return write_files(spec, etc, group)


def write_files(spec: InstanceSpec, folder: Path, group: int | None = None) -> dict[str, str]:
    """Render every .conf into ``folder`` (readable by ``group`` too if given). Each
    file is replaced whole (written aside, then renamed): an Asterisk reloading at that
    moment reads the old file or the new one, never half of one."""
    files = render(spec)
    for name, text in files.items():
        target = folder / name
        partial = folder / f".{name}.part"
        partial.write_text(text)
        if group is not None:
            os.chown(partial, -1, group)
        partial.chmod(0o600 if group is None else 0o640)
        partial.replace(target)
    return files


def required_modules(modules_conf: str) -> list[str]:
    """The modules a rendered modules.conf ``require``s: what the product cannot run
    without, and what an Asterisk it did not start is checked for."""
    return [line.split("=", 1)[1].strip() for line in modules_conf.splitlines()
            if line.startswith("require")]
