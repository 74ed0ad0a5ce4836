"""`switchboard run` as a user runs it, in its own process: shared by the integration
test of the whole product, the browser tests that need the real thing (demo carrier,
receptionist, dashboard and softphone together) and `switchboard bench cluster` (one
per node)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from handoff.settings import load
from pbx import rootfs
from web.telephony import instance_name

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Product:
    data: Path
    port: int
    host: str = "127.0.0.1"
    # Over HTTPS: the CA the test trusts, which signed the dashboard's certificate.
    ca: Path | None = None
    proc: asyncio.subprocess.Process | None = None
    # More settings for every command (--set KEY=VALUE each), e.g. the dashboard's
    # certificate, routing's.
    settings: list[str] = field(default_factory=list)
    # What the running product printed and logged, line by line.
    output: list[str] = field(default_factory=list)
    # How `run` is started, when not as argv("run") from the clone (a systemd unit's
    # ExecStart, with its environment and working folder).
    run_command: list[str] | None = None
    run_env: dict[str, str] | None = None
    run_cwd: Path = REPO
    # What `run` is started through (its settings as they are then): e.g. `ip netns exec
    # NS`, for a cluster node on a host of its own.
    run_prefix: list[str] = field(default_factory=list)
    # A settings file (--config) under the --set ones: tables, e.g. a cluster's nodes.
    config: Path | None = None
    _drain: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}:{self.port}"

    def client_ssl(self) -> ssl.SSLContext | bool:
        """What a browser of this installation trusts: its CA over HTTPS."""
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.client_ssl()))

    def argv(self, *command: str) -> list[str]:
        return [
            sys.executable, "-m", "web.cli",
            *(("--config", str(self.config)) if self.config else ()),
            "--set", f"data_dir={self.data}",
            "--set", f"server.host={self.host}",
            "--set", f"server.port={self.port}",
            # Any free ports: the machine may run a Switchboard of its own.
            "--set", "asterisk.http_port=0", "--set", "asterisk.sip_port=0",
            "--set", "asterisk.ami_port=0", "--set", "asterisk.tls_port=0",
            *(arg for setting in self.settings for arg in ("--set", setting)),
            *command,
        ]

    async def launch(self) -> None:
        """Start `run` and return at once: its output is collected in ``output``."""
        await self._spawn()
        self._drain = asyncio.create_task(self._read_rest())

    async def _spawn(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *(self.run_command or [*self.run_prefix, *self.argv("run")]), cwd=self.run_cwd,
            env=self.run_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )

    async def start(self) -> None:
        """Start `run` and return once its banner is out and /status says ok."""
        await self._spawn()
        assert self.proc is not None and self.proc.stdout is not None
        banner = ""
        async with asyncio.timeout(120):
            while "Switchboard is running." not in banner:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"switchboard run exited:\n{banner}")
                banner += line.decode()
        self._drain = asyncio.create_task(self._read_rest())
        async with asyncio.timeout(30):
            while not await self.healthy():
                await asyncio.sleep(0.2)

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.output.append(line.decode(errors="replace"))

    async def healthy(self) -> bool:
        try:
            async with self.client() as session, session.get(f"{self.url}/status") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def metric(self, name: str) -> float | None:
        """One sample from the running product's /metrics, by its name and labels as
        written there (``switchboard_asterisk_up``, ``x_total{reason="full"}``)."""
        async with self.client() as http, http.get(f"{self.url}/metrics") as page:
            for line in (await page.text()).splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split(" ", 1)[1])
        return None

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.data / "run" / "switchboard.json").read_text()))

    async def new_password(self, login: str) -> str:
        """A fresh dashboard password for ``login``, as an admin gets one from the CLI."""
        passwd = await asyncio.create_subprocess_exec(
            *self.argv("agent", "passwd", login), cwd=REPO, stdout=asyncio.subprocess.PIPE)
        return (await passwd.communicate())[0].decode().split(": ", 1)[1].strip()

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        if self._drain is not None:
            await self._drain
        return code


@contextlib.asynccontextmanager
async def stopped_after(running: Product) -> AsyncIterator[Product]:
    """The product stopped after the test, its Asterisk instances and their trees gone,
    however the test ended."""
    try:
        yield running
    finally:
        await _stop(running)


async def _stop(running: Product) -> None:
    if running.proc is not None and running.proc.returncode is None:
        await running.signal(signal.SIGINT)
    elif (running.data / "run" / "switchboard.json").exists():
        # The test failed after a kill -9: a last run re-attaches and stops everything.
        await running.start()
        await running.signal(signal.SIGINT)
    # The product keeps its Asterisk trees per data folder; this one's folder is gone.
    settings = load(environ={}, overrides={"data_dir": str(running.data)})
    for role in ("pbx", "carrier"):
        shutil.rmtree(
            rootfs.default_cache_dir() / "asterisk-rootfs/srv/switchboard"
            / instance_name(role, settings),
            ignore_errors=True,
        )
