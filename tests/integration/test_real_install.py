"""The README's "A real installation, step by step", run as written: a fresh folder, the
demo off, the first admin and an agent from the command line, a trunk to a carrier, the
product started, an assistant on an external AI engine, the engine started with the
token the command printed. Then what the README says happens next: the agent's desk
phone registers, she goes on duty, a call from the carrier reaches the engine, which
asks for a person; she accepts and talks with the caller.

The block is taken from README.md itself, so the steps cannot drift from what is tested.
Only what must differ on a test machine is put in, each by its literal text in the
block (so a changed README fails here rather than running something else): the
repository's absolute paths, the test carrier's address for the example 192.0.2.10, a
free port for the engine and for the dashboard. The product's other ports come from the
environment (SWITCHBOARD_ASTERISK__SIP_PORT and the like): another Switchboard may run
on this machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from handoff.handoffs import HandoffState
from handoff.store import Store, create_store_engine
from pbx import runtime
from pbx.trunk_config import SipTrunk
from tests.dashboard_fixtures import Browser, free_port
from tests.product_run import REPO
from tests.sip_phone import SipPhone
from tests.waiting import until
from web.bench.world import World

pytestmark = pytest.mark.integration

MARKER = "The real installation's steps: tests/integration/test_real_install.py"
MAX_CALLS = 10  # keeps both Asterisks' RTP blocks small


def readme_steps() -> list[str]:
    """The shell commands of the README's block, continuation lines joined, comments out."""
    text = (REPO / "README.md").read_text()
    block = text.split(MARKER, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands, pending = [], ""
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(pending.strip())
            pending = ""
    return commands


@dataclass
class Shell:
    """Runs the README's commands in a fresh folder, as a user at a terminal would."""

    folder: Path
    env: dict[str, str]
    replace: dict[str, str]
    background: list[asyncio.subprocess.Process] = field(default_factory=list)
    outputs: dict[str, list[str]] = field(default_factory=dict)
    # Each background command's output, read on until it exits.
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def concrete(self, command: str) -> str:
        for readme, here in self.replace.items():
            command = command.replace(readme, here)
        return command

    async def run(self, command: str) -> str:
        proc = await asyncio.create_subprocess_shell(
            self.concrete(command), cwd=self.folder, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await asyncio.wait_for(proc.communicate(), 300))[0].decode()
        assert proc.returncode == 0, f"{command}\n{out}"
        return out

    async def start(self, command: str, ready: str) -> list[str]:
        """A command the README runs with `&`: started in its own session (stopped
        with its children), followed until it prints ``ready``."""
        # `exec`: the shell becomes the command, so Ctrl-C reaches it and its exit code
        # is the command's own (a shell killed by the signal would say -2).
        words = self.concrete(command).split(" ")
        assignments = list(itertools.takewhile(
            lambda word: re.fullmatch(r"[A-Z_]+=\S*", word) is not None, words))
        line = " ".join([*assignments, "exec", *words[len(assignments):]])
        proc = await asyncio.create_subprocess_shell(
            line, cwd=self.folder, env=self.env, start_new_session=True,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self.background.append(proc)
        lines: list[str] = []
        self.outputs[command] = lines
        assert proc.stdout is not None
        stream = proc.stdout
        async with asyncio.timeout(120):
            while not any(ready in line for line in lines):
                line = (await stream.readline()).decode()
                assert line, f"{command} exited:\n{''.join(lines)}"
                lines.append(line)

        async def drain() -> None:
            while line := (await stream.readline()).decode():
                lines.append(line)

        self.readers.append(asyncio.create_task(drain()))
        return lines

    async def stop(self) -> list[int | None]:
        """Ctrl-C to each, in reverse order (the engine, then the product)."""
        codes = []
        for proc in reversed(self.background):
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), 60)
                except TimeoutError:
                    os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            codes.append(proc.returncode)
        await asyncio.gather(*self.readers, return_exceptions=True)
        return codes


def printed(pattern: str, out: str) -> str:
    found = re.search(pattern, out)
    assert found, f"{pattern!r} not in:\n{out}"
    return found.group(1)


@pytest.fixture
async def carrier(tmp_path: Path) -> AsyncIterator[tuple[runtime.AsteriskInstance, int]]:
    """The carrier: an Asterisk of its own, with a trunk to the PBX's SIP port."""
    install = runtime.locate("auto", None, "http://deb.debian.org/debian")
    pbx_sip = free_port()
    instance = runtime.new_instance(
        install, "carrier-real-install", tmp_path / "carrier", max_calls=MAX_CALLS,
        ports=runtime.PortRequest(), app="carrier",
        trunks=(SipTrunk("switchboard", "127.0.0.1", pbx_sip),))
    await instance.start()
    try:
        yield instance, pbx_sip
    finally:
        await instance.stop()


async def test_the_readmes_real_installation_reaches_a_handoff_from_an_external_engine(
    tmp_path: Path, carrier: tuple[runtime.AsteriskInstance, int],
) -> None:
    carrier_pbx, pbx_sip = carrier
    folder = tmp_path / "install"
    folder.mkdir()
    web_port, engine_port = free_port(), free_port()
    carrier_ports = carrier_pbx.spec.ports
    pbx = runtime.allocate_ports(runtime.PortRequest(sip=pbx_sip), max_calls=MAX_CALLS,
                                 avoid=frozenset({carrier_ports.http, carrier_ports.sip,
                                                  carrier_ports.ami, carrier_ports.rtp_start}))
    env = {**os.environ,
           "SWITCHBOARD_SERVER__PORT": str(web_port),
           "SWITCHBOARD_ASTERISK__SIP_PORT": str(pbx.sip),
           "SWITCHBOARD_ASTERISK__HTTP_PORT": str(pbx.http),
           "SWITCHBOARD_ASTERISK__AMI_PORT": str(pbx.ami),
           "SWITCHBOARD_ASTERISK__TLS_PORT": "0",
           "SWITCHBOARD_ASTERISK__MAX_CALLS": str(MAX_CALLS),
           "SWITCHBOARD_ASTERISK__RTP_START": str(pbx.rtp_start),
           "SWITCHBOARD_ASTERISK__RTP_END": str(pbx.rtp_end)}
    shell = Shell(folder, env, replace={
        ".venv/bin/": f"{REPO}/.venv/bin/",
        "tests/external_engine.py": f"{REPO}/tests/external_engine.py",
        "--host 192.0.2.10 --port 5060": f"--host 127.0.0.1 --port {carrier_ports.sip}",
        "127.0.0.1:9092": f"127.0.0.1:{engine_port}",
        "http://127.0.0.1:8080": f"http://127.0.0.1:{web_port}",
    })
    steps = readme_steps()
    # Every text put in is in the block: a README that changed them fails here.
    block = " ".join(steps)
    assert all(text in block for text in shell.replace), shell.replace
    assert len(steps) == 7, steps

    async with AsyncExitStack() as stack:
        stack.push_async_callback(shell.stop)
        outputs = {}
        token = ""
        for step in steps:
            if step.endswith("&"):
                command = step.removesuffix("&").strip()
                ready = ("Switchboard is running." if " run" in command
                         else '"type": "listening"')
                outputs[command] = "".join(await shell.start(
                    command.replace("<token>", token), ready))
            else:
                outputs[step] = await shell.run(step)
                if "assistant add" in step:
                    token = printed(r"control token \(shown once\): (\S+)", outputs[step])
        bea = next(out for cmd, out in outputs.items() if "user add bea" in cmd)
        bea_password = printed(r"(?m)^bea: (\S+)$", bea)
        sip_user, sip_password = re.findall(r"SIP account: (\S+) / (\S+)", bea)[0]
        engine_lines = next(lines for cmd, lines in shell.outputs.items()
                            if "external_engine" in cmd)

        def engine_saw(kind: str) -> bool:
            return any(json.loads(line).get("type") == kind
                       for line in engine_lines if line.startswith("{"))

        # Bea's desk phone registers with the account step 2 printed; she goes on duty.
        phone = await stack.enter_async_context(
            SipPhone(sip_user, sip_password, ("127.0.0.1", pbx.sip)))
        desk = Browser(f"http://127.0.0.1:{web_port}")
        stack.push_async_callback(desk.close)
        assert (await desk.login("bea", bea_password)).status == 303
        assert (await desk.post_json("/api/duty", {"on_duty": True})).status == 200

        # A caller on the carrier dials 2100: the engine has the call and asks for a person.
        world = World(carrier_pbx.ari_url, carrier_pbx.ari_auth)
        await world.start()
        stack.push_async_callback(world.close)
        number = await world.place_call("2100")
        await until(lambda: engine_saw("call_started"), 20)
        store = Store(create_store_engine(f"sqlite:///{folder / 'var' / 'switchboard.db'}"))
        stack.push_async_callback(store.engine.dispose)

        async def offered() -> int | None:
            async with store.transaction() as tx:
                calls = [c for c in await tx.calls.open_calls() if c.caller_number == number]
                handoffs = await tx.handoffs.for_call(calls[0].id) if calls else []
            return next((h.id for h in handoffs if h.state is HandoffState.OFFERED), None)

        handoff_id = await until(offered, 20)
        accepted = await desk.post_json(f"/api/handoffs/{handoff_id}/accept", {})
        assert accepted.status == 200, await accepted.text()
        talk = await phone.wait_call(20)
        await until(lambda: engine_saw("handoff_connected"), 20)
        since = time.monotonic()

        async def caller_hears_bea() -> bool:
            frames = await world.frames(number, since, time.monotonic())
            return sum(1 for _, who in frames if who == "agent") > 25

        await until(caller_hears_bea, 20)
        await phone.wait_hears(talk, "caller")

        # The caller hangs up: the engine hears the end, the call has its outcome.
        await world.hang_up(number)
        await until(lambda: engine_saw("call_ended"), 20)

        async def ended() -> bool:
            async with store.transaction() as tx:
                return not [c for c in await tx.calls.open_calls()
                            if c.caller_number == number]

        await until(ended, 20)
        assert await shell.stop() == [0, 0]  # the engine, then the product: Ctrl-C
