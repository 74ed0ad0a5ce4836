"""Start an Asterisk instance with its own configuration tree, re-attach to one a crashed
controller left running, and stop it cleanly.

Finding an Asterisk to run is :mod:`pbx.installation`; the ports an instance takes are
:mod:`pbx.ports`. Both are named here too, as callers use them with an instance:
``runtime.locate()``, ``runtime.allocate_ports(runtime.PortRequest())``,
``runtime.new_instance(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from pbx.ari import basic_auth_header
from pbx.asterisk_config import (
    Dirs,
    InboundRoute,
    InstanceSpec,
    Ports,
    SipAgent,
    TlsListener,
    default_max_calls,
    write_tree,
)
from pbx.installation import AsteriskUnavailable, AsteriskUnreachable, Installation, locate
from pbx.ports import PortInUse, PortRequest, allocate_ports
from pbx.rootfs import Account
from pbx.spool import HostSpool, SoundFolder
from pbx.trunk_config import SipTrunk, to_register_again

log = logging.getLogger(__name__)

__all__ = [
    "AsteriskInstance",
    "AsteriskUnavailable",
    "AsteriskUnreachable",
    "Installation",
    "PortInUse",
    "PortRequest",
    "allocate_ports",
    "attach",
    "instances_root",
    "locate",
    "new_instance",
    "new_secret",
]


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
    # True from a successful start (or adoption) until stop(): a process gone while this
    # holds died on its own (a crash, kill -9, an OOM kill), and web.asterisk_keeper
    # starts it again. kill() leaves it set: that is how a crash looks.
    wanted: bool = False

    @property
    def conf_inside(self) -> str:
        return f"{self.spec.dirs.etc}/asterisk.conf"

    @property
    def ari_url(self) -> str:
        # ARI is Asterisk's HTTP server, which listens where SIP does (bind_address):
        # on loopback when that is every address, else on that address alone.
        host = self.spec.bind_address
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.spec.ports.http}/ari"

    @property
    def ari_auth(self) -> tuple[str, str]:
        return self.spec.ari_user, self.spec.ari_password

    @property
    def ami_host(self) -> str:
        return "127.0.0.1"  # manager.conf binds AMI to loopback

    @property
    def sip_port(self) -> int:
        return self.spec.ports.sip

    @property
    def config_dir(self) -> Path:
        """Its configuration files, on this host."""
        return self.host_root / "etc"

    @property
    def log_file(self) -> Path:
        return self.host_root / "var/log/messages.log"

    def host_path(self, inside: str) -> Path:
        """Where a file Asterisk names (a recording, a prompt) lives on this host."""
        if self.install.root:
            return self.install.root.host_path(inside)
        return Path(inside)

    def spool(self) -> HostSpool:
        """Its recordings, moved out of its spool on this host."""
        return HostSpool(lambda rel: self.host_path(f"{self.spec.dirs.spool}/{rel}"))

    def sound_folder(self) -> SoundFolder:
        """Where the controller speaks its prompts (a number's menu) for this Asterisk."""
        inside = f"{self.spec.dirs.varlib}/sounds/switchboard"
        return SoundFolder(self.host_path(inside), inside)

    def inside_path(self, host: Path) -> str:
        if self.install.root:
            return "/" + str(host.resolve().relative_to(self.install.root.path))
        return str(host)

    @functools.cached_property
    def account(self) -> Account | None:
        """Who Asterisk runs as once started (None: the controller's own user)."""
        return self.install.daemon_account()

    def render(self) -> None:
        write_tree(self.spec, self.host_root, self.account.gid if self.account else None)

    def _hand_over_state(self) -> None:
        """Asterisk's own folders (its database, spool and recordings, logs, and the run
        folder with the remote console's socket) belong to the account it runs as; a
        tree an older, root-run Asterisk left behind is handed over whole. The
        controller (root) still moves recordings out and talks to the console."""
        if self.account is None:
            return
        dirs = self.spec.dirs
        for inside in (dirs.varlib, dirs.spool, dirs.run, dirs.log):
            top = self.host_root / Path(inside).relative_to(dirs.root)
            for folder, _, files in os.walk(top):
                for path in (folder, *(os.path.join(folder, name) for name in files)):
                    os.lchown(path, self.account.uid, self.account.gid)

    async def apply_directory(
        self, routes: tuple[InboundRoute, ...], agents: tuple[SipAgent, ...],
        trunks: tuple[SipTrunk, ...] | None = None,
    ) -> None:
        """Take new or changed agents' SIP endpoints, assistants' numbers and trunks
        (None: the same trunks) without a restart: the tree is rendered again and
        Asterisk reloads PJSIP and the dialplan. Calls in progress keep their channels
        and bridges; registered phones stay registered (their contacts live in
        Asterisk's database); a trunk whose registration changed registers again."""
        before = self.spec.trunks
        self.spec = dataclasses.replace(
            self.spec, routes=routes, agents=agents,
            trunks=self.spec.trunks if trunks is None else trunks)
        self.render()
        await self.cli("module reload res_pjsip.so")
        await self.cli("dialplan reload")
        for trunk in to_register_again(before, self.spec.trunks):
            await self.cli(f"pjsip send register {trunk.name}")

    async def apply_blocks(self, blocked: tuple[str, ...]) -> None:
        """Refuse these addresses from now on (and no others): PJSIP reloads its ACL.
        Calls and registrations of everyone else are untouched."""
        self.spec = dataclasses.replace(self.spec, blocked=blocked)
        self.render()
        await self.cli("module reload res_pjsip.so")

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
        self.adopted_pid = None  # from now on it is our own child
        self.render()
        self._hand_over_state()
        drop = ["-U", self.account.user, "-G", self.account.group] if self.account else []
        log_path = self.host_root / "var/log/console.log"
        with open(log_path, "ab") as console:  # noqa: ASYNC230 - once, at start-up
            self.process = await asyncio.create_subprocess_exec(
                *self.install.command(*drop, "-C", self.conf_inside, "-f", "-n", "-vvv"),
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
        self.wanted = True

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
        self.wanted = False
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
        install=install, spec=spec, host_root=host_root, ephemeral=False, adopted_pid=pid,
        wanted=True,
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
    dirs = Dirs(root=f"{inside_base}/{name}", **_module_dirs(install))
    tls = spec_fields.pop("tls", None)
    if isinstance(tls, TlsListener):
        account = install.daemon_account()
        spec_fields["tls"] = _install_certificate(tls, host_root, dirs,
                                                  account.gid if account else None)
    spec = InstanceSpec(
        name=name,
        dirs=dirs,
        ports=concrete,
        ari_user="switchboard",
        ari_password=new_secret(),
        ami_user="switchboard",
        ami_secret=new_secret(),
        max_calls=max_calls,
        **spec_fields,  # type: ignore[arg-type]
    )
    return AsteriskInstance(install=install, spec=spec, host_root=host_root, ephemeral=ephemeral)


def _install_certificate(tls: TlsListener, host_root: Path, dirs: Dirs,
                         group: int | None) -> TlsListener:
    """Copy the WSS listener's certificate and key into the instance's own tree: the
    embedded Asterisk runs in its root file system and cannot open the operator's
    paths. A renewed certificate is taken at the next start. Asterisk reads them after
    it dropped root (res_http loads after the switch to its account), so they belong to
    its group, readable and no more, like its configuration."""
    keys = host_root / "etc" / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    if group is not None:
        os.chown(keys, -1, group)
        keys.chmod(0o750)
    for source, target in ((tls.cert, "tls-cert.pem"), (tls.key, "tls-key.pem")):
        fd = os.open(keys / target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(Path(source).read_bytes())
        if group is not None:
            os.chown(keys / target, -1, group)
            (keys / target).chmod(0o640)
    inside = f"{dirs.root}/etc/keys"
    return dataclasses.replace(tls, cert=f"{inside}/tls-cert.pem", key=f"{inside}/tls-key.pem")


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
