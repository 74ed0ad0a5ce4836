"""`switchboard run` as a user runs it: the whole product in its own process.

A call from the demo carrier reaches the built-in receptionist, which speaks (over
AudioSocket) and reports through the AI control API; the caller's 0 asks for a person;
with nobody on duty the AI keeps the caller and a callback is recorded. Then the
product is killed with -9 while the call is up: Asterisk and the caller stay, and a new
`switchboard run` re-attaches, reconciles and brings the AI back to the caller. Ctrl-C
stops everything, and no Asterisk is left behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.settings import load
from handoff.store import Store, create_store_engine
from handoff.store.models import Call
from pbx import rootfs
from pbx.test_caller import TestCaller
from tests.bench.rig import World
from tests.dashboard_fixtures import Browser
from tests.integration.asterisk_helpers import sip_request
from web.app import instance_name

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Product:
    data: Path
    port: int
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, *command: str) -> list[str]:
        return [
            sys.executable, "-m", "web.cli",
            "--set", f"data_dir={self.data}",
            "--set", f"server.port={self.port}",
            # Any free ports: the machine may run a Switchboard of its own.
            "--set", "asterisk.http_port=0", "--set", "asterisk.sip_port=0",
            "--set", "asterisk.ami_port=0",
            *command,
        ]

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv("run"), cwd=REPO, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
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
        while await self.proc.stdout.readline():
            pass

    async def healthy(self) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(
                f"{self.url}/status"
            ) as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.data / "run" / "switchboard.json").read_text()))

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await self._drain
        return code


def asterisk_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "asterisk" in cmdline and marker in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest_asyncio.fixture
async def product(tmp_path: Path) -> AsyncIterator[Product]:
    running = Product(tmp_path / "data", free_port())
    yield running
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


async def eventually(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_run_kill_restart_and_stop_with_a_call_up(product: Product) -> None:
    await product.start()
    state = product.state()
    carrier = state["carrier_instance"]
    assert isinstance(carrier, dict)
    spec = carrier["spec"]
    pbx_marker = str(state["config_dir"]).split("/srv/switchboard/")[1].split("/")[0]

    # doctor sees the running product and its Asterisk 22.
    doctor = await asyncio.create_subprocess_exec(
        *product.argv("doctor", "--json"), cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    report = json.loads((await doctor.communicate())[0])
    assert report["asterisk"]["state"] == "running"
    assert report["asterisk"]["version"].startswith("22.")
    assert report["dashboard"]["state"] == "running"

    engine = create_store_engine(f"sqlite:///{product.data / 'switchboard.db'}")
    store = Store(engine)
    world = World(f"http://127.0.0.1:{spec['ports']['http']}/ari",
                  (spec["ari_user"], spec["ari_password"]))
    await world.start()
    try:
        caller = await world.place_call("2000")

        async def call_row() -> Call | None:
            async with store.transaction() as tx:
                rows = [c for c in await tx.calls.open_calls() if c.caller_number == caller]
            return rows[0] if rows else None

        await eventually(lambda: _is(call_row, CallState.WITH_AI))
        row = await call_row()
        assert row is not None
        call_id = row.id

        async def hears_voice(after: float) -> bool:
            frames = await world.frames(caller, after, time.monotonic())
            return sum(1 for _, who in frames if who != "-") > 25  # half a second of speech

        now = time.monotonic()
        await eventually(lambda: hears_voice(now))

        async def transcript() -> list[tuple[str, str]]:
            async with store.transaction() as tx:
                return [(str(t.speaker), t.text) for t in await tx.transcripts.for_call(call_id)]

        await eventually(lambda: _truthy(transcript))
        assert (await transcript())[0][0] == "ai"  # the greeting, posted through the AI API

        # The caller presses 0: the receptionist asks for a person through the API.
        await world.ari.channels.send_dtmf(world._outbound[caller], "0")

        async def handoff_failed() -> bool:
            async with store.transaction() as tx:
                handoffs = await tx.handoffs.for_call(call_id)
            return bool(handoffs) and handoffs[0].state is HandoffState.FAILED

        await eventually(handoff_failed)
        async with store.transaction() as tx:
            handoff = (await tx.handoffs.for_call(call_id))[0]
        assert handoff.failure_reason is FailureReason.NO_AGENTS  # nobody is on duty
        assert ("caller", "[pressed 0]") in await transcript()

        # kill -9: no clean-up at all. Asterisk and the caller's call stay up.
        await product.signal(signal.SIGKILL)
        assert asterisk_pids(pbx_marker)
        await asyncio.sleep(1.0)
        row = await call_row()
        assert row is not None and row.state is not CallState.ENDED

        # A new run re-attaches to that Asterisk, adopts the call, brings the AI back.
        await product.start()
        assert product.state()["asterisk_pid"] == state["asterisk_pid"]
        now = time.monotonic()
        await eventually(lambda: hears_voice(now))

        await world.hang_up(caller)

        async def ended() -> bool:
            async with store.transaction() as tx:
                return (await tx.calls.get(call_id)).state is CallState.ENDED

        await eventually(ended)
        async with store.transaction() as tx:
            final = await tx.calls.get(call_id)
        assert final.outcome is CallOutcome.CALLBACK_REQUESTED

        # The admin's "place a test call": the demo carrier calls the receptionist; the
        # call ends by itself (absolute timeout) and is recorded like any other.
        await TestCaller(world.ari_url, world.ari_auth, number="2000", max_s=3).place()

        test_calls: list[str] = []

        async def test_call_answered() -> bool:
            async with store.transaction() as tx:
                test_calls.extend(c.id for c in await tx.calls.open_calls()
                                  if c.caller_number == "+15550100000"
                                  and c.state is CallState.WITH_AI)
            return bool(test_calls)

        await eventually(test_call_answered)

        async def test_call_ended() -> bool:
            async with store.transaction() as tx:
                return (await tx.calls.get(test_calls[0])).state is CallState.ENDED

        await eventually(test_call_ended)
        assert final.recording_path and os.path.getsize(final.recording_path) > 8000  # noqa: ASYNC240
    finally:
        await world.close()
        await engine.dispose()

    # An admin adds an agent while the product runs: their phone can register at once
    # (the PBX reloaded its endpoints; nothing restarted).
    passwd = await asyncio.create_subprocess_exec(
        *product.argv("agent", "passwd", "admin"), cwd=REPO, stdout=asyncio.subprocess.PIPE)
    admin_password = (await passwd.communicate())[0].decode().split(": ", 1)[1].strip()
    browser = Browser(product.url)
    try:
        assert (await browser.login("admin", admin_password)).status == 303
        made = await browser.post_json("/api/admin/agents", {
            "login": "zoe", "display_name": "Zoe", "role": "agent",
            "endpoint_kind": "webrtc"})
        assert made.status == 201
        assert (await made.json())["endpoint_live"] is True
    finally:
        await browser.close()
    pbx = state["pbx_instance"]
    assert isinstance(pbx, dict)
    pbx_spec = pbx["spec"]
    credentials = base64.b64encode(
        f"{pbx_spec['ari_user']}:{pbx_spec['ari_password']}".encode()).decode()
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Basic {credentials}"}) as ari_http, ari_http.get(
            f"http://127.0.0.1:{pbx_spec['ports']['http']}/ari/endpoints/PJSIP/agent-zoe"
    ) as endpoint:
        assert endpoint.status == 200  # 404 if the PBX did not know her

    # Someone guesses at the PBX's SIP port: the refusal reaches /metrics through AMI.
    async def refusals() -> float:
        async with aiohttp.ClientSession() as http, http.get(f"{product.url}/metrics") as page:
            text = await page.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("switchboard_pbx_security_refusals_total{")
                   and 'event="InvalidAccountID"' in line)

    async with aiohttp.ClientSession() as http, http.get(f"{product.url}/status") as page:
        assert (await page.json())["ami"] == "connected"
    before = await refusals()
    reply = await sip_request(("127.0.0.1", int(pbx_spec["ports"]["sip"])), "REGISTER", "scanner")
    assert reply.status >= 400, reply.start

    async def counted() -> bool:
        return await refusals() > before

    await eventually(counted)

    # Ctrl-C stops the product and both Asterisk instances.
    assert await product.signal(signal.SIGINT) == 0
    assert asterisk_pids(pbx_marker) == []
    assert not (product.data / "run" / "switchboard.json").exists()


async def _is(row_of, state: CallState) -> bool:  # type: ignore[no-untyped-def]
    row = await row_of()
    return row is not None and row.state is state


async def _truthy(get) -> bool:  # type: ignore[no-untyped-def]
    return bool(await get())
