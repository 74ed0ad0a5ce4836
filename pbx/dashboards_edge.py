"""HAProxy on the cluster's edge: every node's dashboard behind one HTTPS address.

Agents open their desk at the edge, as their phones register there: a desk whose node
dies comes back on a node that is up, through the same address, with the same session
(sessions live in the shared database). HAProxy is Debian's package, run as it is; its
file is rendered from Switchboard's settings (``[cluster]`` edge_https_port and the
nodes' dashboard addresses), every value checked first so a wrong one is named by its
setting, and HAProxy's own check (``haproxy -c``) runs before it is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

import jinja2

from pbx.config_values import (
    ConfigValueError,
    check_host,
    check_ip,
    check_name,
    check_port,
)
from pbx.edge_daemons import check_config, edge_certificate, find_sbin, log_tail, stop_group

log = logging.getLogger(__name__)

CONFIG_FILE = "dashboards.cfg"
# The certificate, its chain and its key in one file, as HAProxy's `crt` reads them.
PEM_FILE = "dashboards.pem"
STATS_SOCKET = "dashboards.sock"
# Debian's haproxy package makes this account; HAProxy started by root drops to it.
ACCOUNT = "haproxy"


class HaproxyUnavailable(RuntimeError):
    """No ``haproxy`` on this machine, or it would not start."""


@dataclass(frozen=True)
class NodeDashboard:
    """One node's dashboard, as the edge reaches it."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DashboardsSpec:
    listen_address: str
    port: int
    nodes: tuple[NodeDashboard, ...]
    # The certificate agents' browsers see (PEM, the chain after it) and its key.
    tls_cert: str = ""
    tls_key: str = ""
    # Where its files are written and its stats socket is (the edge's folders).
    config_dir: str = "/etc/kamailio"
    run_dir: str = "/run/kamailio"

    def validate(self, key: str = "cluster") -> None:
        check_ip(f"{key}.edge_address", self.listen_address)
        check_port(f"{key}.edge_https_port", self.port)
        if not self.nodes:
            raise ConfigValueError(f"{key}.nodes", "the edge needs at least one node")
        for i, node in enumerate(self.nodes):
            check_name(f"{key}.nodes[{i}].name", node.name)
            check_host(f"{key}.nodes[{i}].dashboard_host", node.host)
            check_port(f"{key}.nodes[{i}].dashboard_port", node.port)
        for path_key, path in (("edge_config_dir", self.config_dir),
                               ("edge_run_dir", self.run_dir)):
            if not path.startswith("/") or any(c in path for c in '"\n\\ '):
                raise ConfigValueError(f"{key}.{path_key}", f"{path!r}: an absolute path "
                                       "without quotes, blanks or backslashes")

    @property
    def stats_socket(self) -> str:
        return f"{self.run_dir}/{STATS_SOCKET}"


def render(spec: DashboardsSpec, account: str = "") -> str:
    """HAProxy's file; ``account``: the one it drops to when started by root."""
    spec.validate()
    env = jinja2.Environment(loader=jinja2.PackageLoader("pbx", "haproxy"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    return env.get_template(f"{CONFIG_FILE}.j2").render(
        listen=f"[{spec.listen_address}]" if ":" in spec.listen_address
        else spec.listen_address, port=spec.port, nodes=spec.nodes,
        pem=f"{spec.config_dir}/{PEM_FILE}", stats_socket=spec.stats_socket,
        account=account)


def write_files(spec: DashboardsSpec, folder: Path) -> str:
    """HAProxy's file and its certificate's PEM into ``folder``, each its owner's alone
    (the PEM holds the key; HAProxy reads both before it drops root), replaced whole.
    Returns the rendered file."""
    account = ACCOUNT if os.geteuid() == 0 and _has_account() else ""
    text = render(spec, account)
    cert, key = edge_certificate(spec.tls_cert, spec.tls_key,
                                 "the dashboards at the edge (edge_https_port) need")
    pem = cert + (b"" if cert.endswith(b"\n") else b"\n") + key
    folder.mkdir(parents=True, exist_ok=True)
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    for name, data in ((CONFIG_FILE, text.encode()), (PEM_FILE, pem)):
        partial = folder / f".{name}.part"
        partial.write_bytes(data)
        partial.chmod(0o600)
        partial.replace(folder / name)
    return text


def _has_account() -> bool:
    try:
        pwd.getpwnam(ACCOUNT)
    except KeyError:
        return False
    return True


def find_binary() -> str:
    return find_sbin("haproxy", HaproxyUnavailable)


def check_syntax(config: Path, binary: str | None = None, timeout: float = 30) -> None:
    """HAProxy's own check of ``config`` (``haproxy -c``): every keyword known, the
    certificate loaded. Raises ValueError with its complaints."""
    check_config(binary or find_binary(), config, marks=("ALERT",), timeout=timeout)


async def stats(spec: DashboardsSpec) -> str:
    """One command's answer from the running HAProxy's stats socket ("show stat")."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(spec.stats_socket), 5)
    except (OSError, TimeoutError) as exc:
        raise HaproxyUnavailable(f"the dashboards' proxy does not answer at "
                                 f"{spec.stats_socket}: {exc}") from None
    try:
        writer.write(b"show stat\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.read(), 5)).decode()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def nodes_up(spec: DashboardsSpec) -> dict[str, bool]:
    """Each node's dashboard and whether the edge serves desks from it now (its health
    check passes)."""
    lines = (await stats(spec)).splitlines()
    header = lines[0].lstrip("# ").split(",")
    name, proxy, status = header.index("svname"), header.index("pxname"), header.index(
        "status")
    return {row[name]: row[status].startswith("UP") for row in
            (line.split(",") for line in lines[1:] if line)
            if row[proxy] == "nodes" and row[name] not in ("BACKEND", "FRONTEND")}


class DashboardsEdge:
    """An HAProxy process serving ``spec``, its files written to ``folder`` (which must
    be ``spec.config_dir`` as this machine sees it). Its log goes to haproxy.log there,
    or with ``to_stderr`` to this process's stderr (the service's journal)."""

    what = "the dashboards' proxy (haproxy)"

    def __init__(self, spec: DashboardsSpec, folder: Path, binary: str | None = None,
                 to_stderr: bool = False) -> None:
        self.spec = spec
        self.folder = folder
        self.binary = binary or find_binary()
        self.log_file = None if to_stderr else folder / "haproxy.log"
        self.process: asyncio.subprocess.Process | None = None

    async def check(self) -> None:
        """Write its files and have HAProxy check them: ValueError with its complaints
        (a refused file), nothing started."""
        write_files(self.spec, self.folder)  # two small files, once, at start-up
        await asyncio.to_thread(check_syntax, self.folder / CONFIG_FILE, self.binary)

    async def start(self, timeout: float = 15) -> None:
        """Check its files (see :meth:`check`), start it, and return once its stats
        socket answers."""
        await self.check()
        with contextlib.ExitStack() as files:
            out = (None if self.log_file is None
                   else files.enter_context(open(self.log_file, "ab")))  # noqa: ASYNC230
            self.process = await asyncio.create_subprocess_exec(
                # -db: in the foreground, a child of ours.
                self.binary, "-db", "-f", str(self.folder / CONFIG_FILE),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        log.info("starting the dashboards' proxy pid=%s https=%s:%s", self.process.pid,
                 self.spec.listen_address, self.spec.port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.returncode is not None:
                raise HaproxyUnavailable(f"haproxy exited at start (status "
                                         f"{self.process.returncode}): {self._tail()}")
            with contextlib.suppress(HaproxyUnavailable):
                await stats(self.spec)
                return
            if loop.time() > deadline:
                await self.stop()
                raise HaproxyUnavailable(f"haproxy did not answer within {timeout:.0f} s: "
                                         + self._tail())
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 10) -> None:
        """SIGTERM (HAProxy's hard stop: every desk's connection closed, and each
        reconnects once the edge is back); killed if it has not exited in ``timeout``."""
        process, self.process = self.process, None
        await stop_group(process, timeout)

    def _tail(self, lines: int = 15) -> str:
        return log_tail(self.log_file, lines)
