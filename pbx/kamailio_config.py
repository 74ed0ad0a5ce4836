"""Kamailio, the SIP edge in front of several Asterisk nodes: its files, rendered.

Carriers' calls arrive at the edge and its dispatcher sends each to one of the nodes,
round robin over those that answer OPTIONS. Like Asterisk's files
(:mod:`pbx.asterisk_config`), Kamailio's are rendered from Switchboard's settings
(``[cluster]``) and every value is checked first, so a wrong one is reported by the
setting's name rather than as a proxy that refuses to start. :func:`check_syntax` asks
Kamailio itself (``kamailio -c``) whether it would load the result.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2

from pbx.config_values import (
    ConfigValueError,
    check_host,
    check_ip,
    check_name,
    check_port,
    check_realm,
    check_secret,
)
from pbx.edge_daemons import check_config, edge_certificate, find_sbin

CONFIG_FILE = "kamailio.cfg"
LIST_FILE = "dispatcher.list"
# Copies of the browsers' WebSocket certificate and key, beside kamailio.cfg: Kamailio
# reads them as its own account (after dropping root, or started as it by systemd), which
# may not read the originals (a key is its owner's alone).
TLS_CERT_FILE = "edge-tls.pem"
TLS_KEY_FILE = "edge-tls.key"
# The dispatcher's set every node is in: one pool of equal nodes for now.
NODE_SET = 1


@dataclass(frozen=True)
class EdgeNode:
    """One Asterisk node behind the edge: where its SIP listener is."""

    name: str
    host: str
    port: int = 5060

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port}"


@dataclass(frozen=True)
class EdgePhone:
    """An agent's SIP account, as the edge's registrar checks a phone's REGISTER."""

    user: str
    password: str


@dataclass(frozen=True)
class EdgeSpec:
    listen_address: str
    port: int
    nodes: tuple[EdgeNode, ...]
    # Addresses or networks (CIDR) new calls are taken from: the carriers' SIP servers.
    # Anyone else's INVITE is refused at the edge, as a node refuses an unknown trunk.
    carriers: tuple[str, ...] = ()
    # Where Kamailio reads its files and keeps its control socket, as it sees them.
    config_dir: str = "/etc/kamailio"
    run_dir: str = "/run/kamailio"
    # Seconds between OPTIONS probes to every node: about how long a dead node still
    # gets new calls (each of which then tries the next node after no_answer_ms).
    probe_interval_s: int = 2
    no_answer_ms: int = 2000
    transports: tuple[str, ...] = ("udp", "tcp")
    children: int = 4
    # Agents' desk phones register here (asterisk.sip_realm: the realm the nodes name,
    # so a phone keeps one set of credentials whoever challenges it).
    phones: tuple[EdgePhone, ...] = ()
    realm: str = "pbx"
    # A sender whose REGISTER fails the digest block_after times (each within
    # block_window_s of the last) is refused for block_for_s; 0: never. Not the networks
    # in never_block. (security.block_*, which a node's Asterisk applies too.)
    block_after: int = 20
    block_window_s: int = 300
    block_for_s: int = 3600
    never_block: tuple[str, ...] = ()
    # cluster.lease_s: a node silent this long is lost, and the edge hangs up the calls
    # it held with agents' phones.
    lease_s: int = 10
    # Browser softphones register here over secure WebSocket (RFC 7118) on this TCP
    # port, with this certificate (PEM, the chain after it) and key; 0: no WebSocket at
    # the edge, browsers register to their node's Asterisk.
    wss_port: int = 0
    tls_cert: str = ""
    tls_key: str = ""

    def validate(self, key: str = "cluster") -> None:
        check_ip(f"{key}.edge_address", self.listen_address)
        check_port(f"{key}.edge_port", self.port)
        for path_key, path in (("edge_config_dir", self.config_dir),
                               ("edge_run_dir", self.run_dir),
                               ("edge_tls_cert", self.tls_cert),
                               ("edge_tls_key", self.tls_key)):
            # Each goes between quotes in kamailio.cfg.
            if path_key.startswith("edge_tls") and not path:
                continue
            if not path.startswith("/") or any(c in path for c in '"\n\\'):
                raise ConfigValueError(f"{key}.{path_key}", f"{path!r}: an absolute "
                                       "path without quotes or backslashes")
        if self.wss_port:
            check_port(f"{key}.edge_wss_port", self.wss_port)
            if self.wss_port == self.port:
                # TCP's listener is on the same address: one port cannot be both.
                raise ConfigValueError(f"{key}.edge_wss_port", f"{self.wss_port} is the "
                                       "edge's SIP port (edge_port)")
        if not 1 <= self.probe_interval_s <= 60:
            raise ConfigValueError(f"{key}.probe_interval_s",
                                   f"{self.probe_interval_s}: 1 to 60 seconds")
        if not self.nodes:
            raise ConfigValueError(f"{key}.nodes", "the edge needs at least one node")
        names: set[str] = set()
        places: set[tuple[str, int]] = {(self.listen_address, self.port)}
        if self.wss_port:
            places.add((self.listen_address, self.wss_port))
        for i, node in enumerate(self.nodes):
            check_name(f"{key}.nodes[{i}].name", node.name)
            check_host(f"{key}.nodes[{i}].sip_host", node.host)
            check_port(f"{key}.nodes[{i}].sip_port", node.port)
            if node.name in names:
                raise ConfigValueError(f"{key}.nodes[{i}].name", f"{node.name!r} is used twice")
            names.add(node.name)
            if (node.host, node.port) in places:
                raise ConfigValueError(f"{key}.nodes[{i}].sip_port", f"{node.host}:{node.port} "
                                       "is the edge's own listener or another node's")
            places.add((node.host, node.port))
        check_realm("asterisk.sip_realm", self.realm)
        for i, phone in enumerate(self.phones):
            # The same rules as a node's endpoint: letters, digits and a few marks, so
            # nothing in them breaks out of kamailio.cfg's quotes.
            check_name(f"phones[{i}].sip_user", phone.user)
            check_secret(f"phones[{i}].sip_password", phone.password)
        if not self.carriers:
            raise ConfigValueError(f"{key}.carriers", "none: list the addresses or "
                                   "networks the edge takes calls from (your carriers' SIP "
                                   "servers)")
        for i, carrier in enumerate(self.carriers):
            try:
                ipaddress.ip_network(carrier, strict=False)
            except ValueError:
                raise ConfigValueError(f"{key}.carriers[{i}]", f"{carrier!r} is not an "
                                       "address or a network (198.51.100.7, "
                                       "203.0.113.0/24)") from None

    @property
    def control_socket(self) -> str:
        return f"{self.run_dir}/kamailio_ctl"


def render(spec: EdgeSpec) -> dict[str, str]:
    """``{file name: text}``: Kamailio's configuration and the dispatcher's node list."""
    spec.validate()
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pbx", "kamailio"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    config = env.get_template(f"{CONFIG_FILE}.j2").render(
        carriers=[str(ipaddress.ip_network(c, strict=False)) for c in spec.carriers],
        listen_address=spec.listen_address, port=spec.port, transports=spec.transports,
        children=spec.children, control_socket=spec.control_socket,
        no_answer_ms=spec.no_answer_ms, probe_interval_s=spec.probe_interval_s,
        list_file=f"{spec.config_dir}/{LIST_FILE}", node_set=NODE_SET,
        phones=spec.phones, realm=spec.realm, block_after=spec.block_after,
        block_window_s=spec.block_window_s, block_for_s=spec.block_for_s,
        never_block=[str(ipaddress.ip_network(n, strict=False)) for n in spec.never_block],
        lease_s=spec.lease_s, wss_port=spec.wss_port,
        tls_cert=f"{spec.config_dir}/{TLS_CERT_FILE}",
        tls_key=f"{spec.config_dir}/{TLS_KEY_FILE}",
    )
    # setid destination flags priority attrs: duid names the node in kamcmd's listing.
    nodes = "".join(f"{NODE_SET} {node.uri} 0 0 duid={node.name}\n" for node in spec.nodes)
    return {CONFIG_FILE: config,
            LIST_FILE: f"# Switchboard's nodes, rendered from [cluster] nodes.\n{nodes}"}


def tls_files(spec: EdgeSpec) -> dict[str, bytes]:
    """The browsers' WebSocket certificate and key, as the edge's copies hold them (none
    without a WebSocket), checked first as the dashboard's are (pbx.config_values)."""
    if not spec.wss_port:
        return {}
    cert, key = edge_certificate(spec.tls_cert, spec.tls_key,
                                 "browsers' WebSocket at the edge (edge_wss_port) needs")
    return {TLS_CERT_FILE: cert, TLS_KEY_FILE: key}


def write_files(spec: EdgeSpec, folder: Path, group: int | None = None) -> dict[str, str]:
    """Every file into ``folder``: readable by their owner only, or also by ``group``
    (Kamailio's account), since kamailio.cfg holds the phones' passwords (and the
    certificate's copy its key). Each file is replaced whole (written aside, then
    renamed). Returns the rendered text files."""
    files = render(spec)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {name: text.encode() for name, text in files.items()} | tls_files(spec)
    for name, data in contents.items():
        partial = folder / f".{name}.part"
        partial.write_bytes(data)
        if group is not None:
            os.chown(partial, -1, group)
        partial.chmod(0o600 if group is None else 0o640)
        partial.replace(folder / name)
    return files


class KamailioUnavailable(RuntimeError):
    """No ``kamailio`` binary on this machine."""


def find_binary() -> str:
    return find_sbin("kamailio", KamailioUnavailable)


def check_syntax(config: Path, binary: str | None = None, timeout: float = 30) -> None:
    """Kamailio's own check of ``config`` (``kamailio -c``): modules found, every
    function and parameter known. Raises ValueError with Kamailio's complaints."""
    check_config(binary or find_binary(), config, marks=("ERROR", "CRITICAL"),
                 timeout=timeout)
