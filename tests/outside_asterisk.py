"""An Asterisk the product did not start: the test runs it as a container's entrypoint
would (``asterisk -f -C <etc>/asterisk.conf``), from the files `switchboard config
render` wrote, and kills and starts it again as an operator or an orchestrator might.

It is the embedded root file system's Asterisk, run by the test (never through
pbx.runtime): its configuration folder is the "shared volume" the product writes into
(asterisk.config_dir on the product's side, asterisk.etc_dir as Asterisk sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from pbx import runtime


@dataclass
class OutsideAsterisk:
    install: runtime.Installation
    inside_root: str  # its folder as Asterisk sees it, e.g. /srv/switchboard/ext-123
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def host_root(self) -> Path:
        assert self.install.root is not None, "the embedded root file system"
        return self.install.root.host_path(self.inside_root)

    @property
    def etc_inside(self) -> str:
        return f"{self.inside_root}/etc"

    @property
    def config_dir(self) -> Path:
        """The "volume" both sides share: written by the product, read by Asterisk."""
        return self.host_root / "etc"

    def _argv(self, *args: str) -> list[str]:
        return self.install.command("-C", f"{self.etc_inside}/asterisk.conf", *args)

    async def start(self, timeout: float = 60) -> None:
        log = open(self.host_root / "console.log", "ab")  # noqa: ASYNC230, SIM115
        with log:
            self.process = await asyncio.create_subprocess_exec(
                *self._argv("-f", "-n", "-vvv"), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True)
        async with asyncio.timeout(timeout):
            while True:
                if self.process.returncode is not None:
                    tail = (self.host_root / "console.log").read_text(errors="replace")
                    raise AssertionError(f"the outside Asterisk exited:\n{tail[-2000:]}")
                console = await asyncio.create_subprocess_exec(
                    *self._argv("-rx", "core waitfullybooted"),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                out, _ = await console.communicate()
                if b"fully booted" in out:
                    return
                await asyncio.sleep(0.2)

    async def cli(self, command: str) -> str:
        console = await asyncio.create_subprocess_exec(
            *self._argv("-rx", command), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        return (await console.communicate())[0].decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL, as a crash or `docker kill` would: no goodbye to anyone."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.running:
            console = await asyncio.create_subprocess_exec(
                *self._argv("-rx", "core stop now"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await console.wait()
            assert self.process is not None
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                await self.kill()
