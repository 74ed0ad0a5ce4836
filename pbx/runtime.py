"""Find Asterisk, start an instance with its own configuration, and stop it cleanly.

Where Asterisk comes from, in this order:
1. ``SWITCHBOARD_ASTERISK`` (or ``asterisk.source``): a path to an ``asterisk`` binary,
   or the ARI URL of an Asterisk someone else runs (``http://user:pass@host:8088/ari``);
2. ``asterisk`` >= 20 on PATH;
3. the embedded runtime: Debian sid's Asterisk in a root file system built once into a
   cache folder (see :mod:`pbx.rootfs`) and run with ``chroot``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import aiohttp

from pbx import rootfs
from pbx.asterisk_config import (
    Dirs,
    InboundRoute,
    InstanceSpec,
    Ports,
    SipAgent,
    default_max_calls,
    rtp_ports_for,
    write_tree,
)

log = logging.getLogger(__name__)

MIN_MAJOR = 20
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class AsteriskUnavailable(RuntimeError):
    """Asterisk cannot be found, built or started; the message says what to do instead."""


class PortInUse(AsteriskUnavailable):
    def __init__(self, key: str, port: int, proto: str) -> None:
        super().__init__(
            f"{key}: {proto} port {port} on 127.0.0.1 is already in use by another program; "
            f"stop it or choose another port (or 0 for any free port)"
        )
        self.key = key
        self.port = port


@dataclass(frozen=True)
class Installation:
    """An Asterisk we can use. ``kind`` says how it runs."""

    kind: Literal["embedded", "binary", "external"]
    version: str
    binary: Path | None = None
    root: rootfs.Rootfs | None = None
    ari_url: str | None = None

    @property
    def where(self) -> str:
        if self.kind == "embedded" and self.root:
            return f"embedded Debian sid root file system at {self.root.path}"
        if self.kind == "binary":
            return f"{self.binary}"
        return f"external instance at {redact_url(self.ari_url or '')}"

    def command(self, *args: str) -> list[str]:
        """Argv running the asterisk binary (inside the chroot for the embedded one)."""
        if self.kind == "embedded" and self.root:
            return ["chroot", str(self.root.path), "/usr/sbin/asterisk", *args]
        if self.kind == "binary" and self.binary:
            return [str(self.binary), *args]
        raise AsteriskUnavailable("an external Asterisk is not started by Switchboard")


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """ARI takes HTTP basic auth; aiohttp deprecates ``auth=``, so send the header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"Asterisk (?:certified/)?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _binary_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(
            [*argv, "-V"], capture_output=True, text=True, timeout=15, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AsteriskUnavailable(f"cannot run {argv[-1]}: {exc}") from exc
    return out


def locate(
    source: str = "auto",
    cache_dir: Path | None = None,
    mirror: str = DEFAULT_MIRROR,
    build: bool = True,
) -> Installation:
    """Find an Asterisk to use, building the embedded one if allowed and needed."""
    source = os.environ.get("SWITCHBOARD_ASTERISK", "") or source
    if source.startswith(("http://", "https://")):
        return Installation(kind="external", version="unknown", ari_url=source)
    if source not in ("", "auto"):
        path = Path(source)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AsteriskUnavailable(
                f"asterisk.source / SWITCHBOARD_ASTERISK: {source!r} is neither an executable "
                "asterisk binary nor an http(s) ARI URL"
            )
        return _checked_binary(path)
    on_path = shutil.which("asterisk")
    if on_path:
        try:
            return _checked_binary(Path(on_path))
        except AsteriskUnavailable as exc:
            log.info("not using %s: %s", on_path, exc)
    cache = cache_dir or rootfs.default_cache_dir()
    try:
        tree = rootfs.ensure(cache, mirror) if build else rootfs.find_built(cache, mirror)
    except rootfs.RootfsError as exc:
        raise AsteriskUnavailable(str(exc)) from exc
    if tree is None:
        raise AsteriskUnavailable(
            f"no Asterisk found: none on PATH and the embedded one is not built yet in {cache} "
            "(`make run` or `switchboard setup` builds it)"
        )
    version = _binary_version(["chroot", str(tree.path), "/usr/sbin/asterisk"])
    return Installation(kind="embedded", version=version, root=tree, binary=tree.asterisk)


def _checked_binary(path: Path) -> Installation:
    version = _binary_version([str(path)])
    parsed = parse_version(version)
    if not parsed or parsed[0] < MIN_MAJOR:
        raise AsteriskUnavailable(f"{path} reports {version!r}; Switchboard needs Asterisk >= 20")
    return Installation(kind="binary", version=version, binary=path)


# ---- ports ---------------------------------------------------------------------------


def _port_free(port: int, kind: int) -> bool:
    """Whether Asterisk could bind ``port`` on loopback now.

    For TCP that means nobody listens on it. Connections that ended a moment ago (a
    browser's SIP WebSocket, the controller's ARI socket, closed by Asterisk as it
    stopped) stay in TIME_WAIT on the port for a minute; Asterisk binds its HTTP and
    AMI listeners with SO_REUSEADDR and starts fine over them, so the check does too.
    Linux still refuses that bind while a socket listens on the port. UDP has no
    TIME_WAIT, and SO_REUSEADDR there would let two phones' worth of sockets share a
    port, so a UDP port is free only if a plain bind succeeds.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(kind: int = socket.SOCK_STREAM, avoid: frozenset[int] = frozenset()) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise AsteriskUnavailable("no free port on 127.0.0.1")


def claim_port(
    key: str, wanted: int, kind: int = socket.SOCK_STREAM, avoid: frozenset[int] = frozenset()
) -> int:
    """``wanted`` if free (0 picks any free port); a taken port is reported by its key."""
    if wanted == 0:
        return free_port(kind, avoid)
    if not _port_free(wanted, kind):
        raise PortInUse(key, wanted, "TCP" if kind == socket.SOCK_STREAM else "UDP")
    return wanted


def free_rtp_range(size: int, avoid: frozenset[int] = frozenset()) -> tuple[int, int]:
    """A block of ``size`` UDP ports no other instance uses (nor holds a port of
    ``avoid``), starting on an even port (RTP's); random so side-by-side runs differ."""
    size += size % 2
    for _ in range(50):
        start = random.randrange(20000, max(20001, 50000 - size), 2 * size)
        end = start + size - 1
        probe = (start, start + size // 2, end)
        if not any(start <= p <= end for p in avoid) and all(
            _port_free(p, socket.SOCK_DGRAM) for p in probe
        ):
            return start, end
    raise AsteriskUnavailable(f"no free block of {size} UDP ports for RTP from 20000 up")


# ---- instances -----------------------------------------------------------------------


@dataclass(frozen=True)
class PortRequest:
    """Ports an instance should use; 0 means "any free port"."""

    http: int = 0
    sip: int = 0
    ami: int = 0
    rtp_start: int = 0
    rtp_end: int = 0


def allocate_ports(
    req: PortRequest, avoid: frozenset[int] = frozenset(), max_calls: int = 0
) -> Ports:
    """Concrete ports for ``req``; ``avoid`` holds ports already given to another instance.
    An RTP range not asked for is sized for ``max_calls`` (0: the machine's default)."""
    http = claim_port("asterisk.http_port", req.http, avoid=avoid)
    sip = claim_port("asterisk.sip_port", req.sip, socket.SOCK_DGRAM, avoid | {http})
    ami = claim_port("asterisk.ami_port", req.ami, avoid=avoid | {http, sip})
    size = rtp_ports_for(max_calls or default_max_calls())
    if req.rtp_start:
        rtp_start, rtp_end = req.rtp_start, req.rtp_end or req.rtp_start + size - 1
    else:
        rtp_start, rtp_end = free_rtp_range(size, avoid)
    return Ports(http=http, sip=sip, ami=ami, rtp_start=rtp_start, rtp_end=rtp_end)


def new_secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class AsteriskInstance:
    """One running Asterisk with its own config tree, owned by this process."""

    install: Installation
    spec: InstanceSpec
    host_root: Path
    ephemeral: bool = True
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    # Set when this process attached to an Asterisk an earlier controller started (it
    # outlives a controller crash, and the calls in it must go on).
    adopted_pid: int | None = None

    @property
    def conf_inside(self) -> str:
        return f"{self.spec.dirs.etc}/asterisk.conf"

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.ports.http}/ari"

    @property
    def ari_auth(self) -> tuple[str, str]:
        return self.spec.ari_user, self.spec.ari_password

    @property
    def sip_port(self) -> int:
        return self.spec.ports.sip

    @property
    def log_file(self) -> Path:
        return self.host_root / "var/log/messages.log"

    def host_path(self, inside: str) -> Path:
        """Where a file Asterisk names (a recording, a prompt) lives on this host."""
        if self.install.root:
            return self.install.root.host_path(inside)
        return Path(inside)

    def inside_path(self, host: Path) -> str:
        if self.install.root:
            return "/" + str(host.resolve().relative_to(self.install.root.path))
        return str(host)

    def render(self) -> None:
        write_tree(self.spec, self.host_root)

    async def apply_directory(
        self, routes: tuple[InboundRoute, ...], agents: tuple[SipAgent, ...]
    ) -> None:
        """Take new or changed agents' SIP endpoints and assistants' numbers without a
        restart: the tree is rendered again and Asterisk reloads PJSIP and the dialplan.
        Calls in progress keep their channels and bridges; registered phones stay
        registered (their contacts live in Asterisk's database)."""
        self.spec = dataclasses.replace(self.spec, routes=routes, agents=agents)
        self.render()
        await self.cli("module reload res_pjsip.so")
        await self.cli("dialplan reload")

    async def cli(self, command: str, timeout: float = 10) -> str:
        """Run one CLI command through the remote console; raises if Asterisk is not up."""
        proc = await asyncio.create_subprocess_exec(
            *self.install.command("-C", self.conf_inside, "-rx", command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        text = out.decode(errors="replace")
        if proc.returncode != 0 or "Unable to connect to remote asterisk" in text:
            raise AsteriskUnavailable(f"CLI {command!r} failed: {text.strip()[:200]}")
        return text

    async def start(self, timeout: float = 60) -> None:
        self.render()
        log_path = self.host_root / "var/log/console.log"
        with open(log_path, "ab") as console:  # noqa: ASYNC230 - once, at start-up
            self.process = await asyncio.create_subprocess_exec(
                *self.install.command("-C", self.conf_inside, "-f", "-n", "-vvv"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,  # our Ctrl-C goes to the controller, which stops us
            )
        log.info(
            "starting Asterisk %s pid=%s ari=%s sip=udp:%s",
            self.spec.name,
            self.process.pid,
            self.ari_url,
            self.spec.ports.sip,
        )
        try:
            await asyncio.wait_for(self._wait_booted(), timeout)
        except (TimeoutError, AsteriskUnavailable) as exc:
            tail = self._log_tail(log_path)
            await self.stop()
            reason = _explain_failure(tail) or f"did not come up within {timeout:.0f} s"
            raise AsteriskUnavailable(
                f"Asterisk {self.spec.name} failed to start: {reason}\n{tail}"
            ) from exc

    async def _wait_booted(self) -> None:
        assert self.process is not None
        while True:
            if self.process.returncode is not None:
                raise AsteriskUnavailable(f"exited with status {self.process.returncode}")
            with contextlib.suppress(AsteriskUnavailable, TimeoutError):
                out = await self.cli("core waitfullybooted", timeout=5)
                if "fully booted" in out:
                    break
            await asyncio.sleep(0.2)
        await self._wait_ari()

    async def _wait_ari(self) -> None:
        headers = basic_auth_header(*self.ari_auth)
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(
                        f"{self.ari_url}/asterisk/info", headers=headers
                    ) as resp:
                        if resp.status == 200:
                            return
                        if resp.status == 401:
                            raise AsteriskUnavailable("ARI refused our generated credentials")
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.adopted_pid

    async def stop(self, timeout: float = 10) -> None:
        """Graceful ``core stop now``, then SIGTERM, then SIGKILL; removes an ephemeral tree."""
        if self.process is None and self.adopted_pid is not None:
            await self._stop_adopted(self.adopted_pid, timeout)
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(AsteriskUnavailable, TimeoutError, OSError):
                await self.cli("core stop now", timeout=5)
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                try:
                    await asyncio.wait_for(proc.wait(), timeout / 2)
                    break
                except TimeoutError:
                    log.warning("Asterisk %s did not stop; sending %s", self.spec.name, sig)
            log.info("Asterisk %s stopped (status %s)", self.spec.name, proc.returncode)
        if self.ephemeral:
            shutil.rmtree(self.host_root, ignore_errors=True)

    async def _stop_adopted(self, pid: int, timeout: float) -> None:
        with contextlib.suppress(AsteriskUnavailable, TimeoutError, OSError):
            await self.cli("core stop now", timeout=5)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = asyncio.get_running_loop().time() + timeout / 2
            # Not our child: no wait() to await, so poll until it is gone.
            while _alive(pid) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if not _alive(pid):
                break
        self.adopted_pid = None

    async def restart(self, timeout: float = 60) -> None:
        """Stop and start again with the same configuration (ports, secrets, tree)."""
        ephemeral, self.ephemeral = self.ephemeral, False
        try:
            await self.stop()
        finally:
            self.ephemeral = ephemeral
        await self.start(timeout)

    async def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to anyone. For fault drills."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.returncode is None
        return self.adopted_pid is not None and _alive(self.adopted_pid)

    @staticmethod
    def _log_tail(path: Path, lines: int = 15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def attach(
    install: Installation, spec: InstanceSpec, host_root: Path, pid: int
) -> AsteriskInstance | None:
    """The instance ``spec`` describes if it still runs as ``pid`` and answers ARI."""
    if not _alive(pid):
        return None
    instance = AsteriskInstance(
        install=install, spec=spec, host_root=host_root, ephemeral=False, adopted_pid=pid
    )
    try:
        await asyncio.wait_for(instance._wait_ari(), 3)
    except (TimeoutError, AsteriskUnavailable):
        return None
    return instance


def _explain_failure(log_tail: str) -> str:
    if "Address already in use" in log_tail:
        return "a port it needs is already in use (see the log lines below)"
    if "Unable to load config" in log_tail or "No such file" in log_tail:
        return "its configuration could not be read"
    return ""


def instances_root(install: Installation, state_dir: Path) -> tuple[Path, str]:
    """(host folder, the same folder as Asterisk sees it) under which instance trees live.

    The embedded Asterisk only sees its own root file system, so instance trees live
    inside it; recordings are moved out to the product's data folder once a call ends.
    """
    if install.root:
        return install.root.host_path("/srv/switchboard"), "/srv/switchboard"
    return state_dir / "asterisk", str(state_dir / "asterisk")


def new_instance(
    install: Installation,
    name: str,
    state_dir: Path,
    *,
    ports: Ports | PortRequest = PortRequest(),
    ephemeral: bool = True,
    max_calls: int = 0,
    **spec_fields: object,
) -> AsteriskInstance:
    """Prepare (not start) an instance named ``name`` with fresh secrets and free ports,
    taking ``max_calls`` calls at once (0: the machine's default)."""
    if install.kind == "external":
        raise AsteriskUnavailable("an external Asterisk is configured; nothing to start")
    host_base, inside_base = instances_root(install, state_dir)
    host_root = host_base / name
    max_calls = max_calls or default_max_calls()
    concrete = ports if isinstance(ports, Ports) else allocate_ports(ports, max_calls=max_calls)
    if ephemeral and host_root.exists():
        shutil.rmtree(host_root)
    host_root.mkdir(parents=True, exist_ok=True)
    spec = InstanceSpec(
        name=name,
        dirs=Dirs(root=f"{inside_base}/{name}", **_module_dirs(install)),
        ports=concrete,
        ari_user="switchboard",
        ari_password=new_secret(),
        ami_user="switchboard",
        ami_secret=new_secret(),
        max_calls=max_calls,
        **spec_fields,  # type: ignore[arg-type]
    )
    return AsteriskInstance(install=install, spec=spec, host_root=host_root, ephemeral=ephemeral)


def _module_dirs(install: Installation) -> dict[str, str]:
    if install.kind == "binary" and install.binary:
        for candidate in (
            "/usr/lib/x86_64-linux-gnu/asterisk/modules",
            "/usr/lib/asterisk/modules",
            "/usr/lib64/asterisk/modules",
        ):
            if Path(candidate).is_dir():
                return {"modules": candidate, "data": _data_dir()}
    return {}


def _data_dir() -> str:
    for candidate in ("/usr/share/asterisk", "/var/lib/asterisk"):
        if Path(candidate, "sounds").exists():
            return candidate
    return "/usr/share/asterisk"
