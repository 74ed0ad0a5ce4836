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
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.store import Store, create_store_engine
from handoff.store.models import Call
from pbx.demo_caller import DemoCaller
from tests.dashboard_fixtures import Browser
from tests.integration.asterisk_helpers import process_ids, sip_request
from tests.product_run import REPO, Product, product
from tests.waiting import until
from web.bench.dashboard_site import free_port
from web.bench.world import World

__all__ = ["product"]

pytestmark = pytest.mark.integration


def grafana_metric_names() -> set[str]:
    """The metrics the repository's Grafana dashboard queries."""
    dashboard = json.loads((REPO / "web" / "grafana" / "switchboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for expr in exprs
            for name in re.findall(r"\b(?:switchboard|process)_[a-z_]+\b", expr)}


async def metric(product: Product, name: str) -> float | None:
    """One unlabelled sample from the running product's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{product.url}/metrics") as page:
        for line in (await page.text()).splitlines():
            if line.startswith(f"{name} "):
                return float(line.split(" ", 1)[1])
    return None


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

        async def with_ai() -> Call | None:
            row = await call_row()
            return row if row is not None and row.state is CallState.WITH_AI else None

        call_id = (await until(with_ai)).id

        async def hears_voice(after: float) -> bool:
            frames = await world.frames(caller, after, time.monotonic())
            return sum(1 for _, who in frames if who != "-") > 25  # half a second of speech

        now = time.monotonic()
        await until(lambda: hears_voice(now))

        async def transcript() -> list[tuple[str, str]]:
            async with store.transaction() as tx:
                return [(str(t.speaker), t.text) for t in await tx.transcripts.for_call(call_id)]

        await until(transcript)
        assert (await transcript())[0][0] == "ai"  # the greeting, posted through the AI API

        # The caller presses 0: the receptionist asks for a person through the API.
        await world.ari.channels.send_dtmf(world._outbound[caller], "0")

        async def handoff_failed() -> bool:
            async with store.transaction() as tx:
                handoffs = await tx.handoffs.for_call(call_id)
            return bool(handoffs) and handoffs[0].state is HandoffState.FAILED

        await until(handoff_failed)
        async with store.transaction() as tx:
            handoff = (await tx.handoffs.for_call(call_id))[0]
        assert handoff.failure_reason is FailureReason.NO_AGENTS  # nobody is on duty
        assert ("caller", "[pressed 0]") in await transcript()

        # kill -9: no clean-up at all. Asterisk and the caller's call stay up. signal()
        # returns once the process is gone, so nothing can change the call's row now;
        # that the call itself stayed up shows when the next run brings the AI back.
        await product.signal(signal.SIGKILL)
        assert asterisk_pids(pbx_marker)
        row = await call_row()
        assert row is not None and row.state is not CallState.ENDED

        # A new run re-attaches to that Asterisk, adopts the call, brings the AI back.
        await product.start()
        assert product.state()["asterisk_pid"] == state["asterisk_pid"]
        # The Asterisk it re-attached to still runs as its own account, not root.
        assert 0 not in process_ids(int(str(state["asterisk_pid"])))["Uid"]
        now = time.monotonic()
        await until(lambda: hears_voice(now))

        await world.hang_up(caller)

        async def ended() -> bool:
            async with store.transaction() as tx:
                return (await tx.calls.get(call_id)).state is CallState.ENDED

        await until(ended)
        async with store.transaction() as tx:
            final = await tx.calls.get(call_id)
        assert final.outcome is CallOutcome.CALLBACK_REQUESTED

        # The admin's "place a test call": the demo carrier calls the receptionist; the
        # call ends by itself (absolute timeout) and is recorded like any other.
        await DemoCaller(world.ari_url, world.ari_auth, number="2000", max_s=3).place()

        test_calls: list[str] = []

        async def test_call_answered() -> bool:
            async with store.transaction() as tx:
                test_calls.extend(c.id for c in await tx.calls.open_calls()
                                  if c.caller_number == "+15550100000"
                                  and c.state is CallState.WITH_AI)
            return bool(test_calls)

        await until(test_call_answered)

        async def test_call_ended() -> bool:
            async with store.transaction() as tx:
                return (await tx.calls.get(test_calls[0])).state is CallState.ENDED

        await until(test_call_ended)
        async with store.transaction() as tx:
            test_call = await tx.calls.get(test_calls[0])
        # The test call's own recording (not the earlier call's) holds its seconds.
        assert test_call.recording_path and test_call.recording_path != final.recording_path
        assert os.path.getsize(test_call.recording_path) > 8000  # noqa: ASYNC240
        # Asterisk's account wrote it; once moved out it is the product's own.
        assert os.stat(test_call.recording_path).st_uid == os.geteuid()
    finally:
        await world.close()
        await engine.dispose()

    # An admin adds an agent while the product runs: their phone can register at once
    # (the PBX reloaded its endpoints; nothing restarted).
    admin_password = await product.new_password("admin")
    browser = Browser(product.url)
    try:
        assert (await browser.login("admin", admin_password)).status == 303
        made = await browser.post_json("/api/admin/agents", {
            "login": "zoe", "display_name": "Zoe", "role": "agent",
            "endpoint_kind": "webrtc"})
        assert made.status == 201
        assert (await made.json())["endpoint_live"] is True
        # And a trunk to a carrier that does not answer: the PBX takes it at once, and
        # its status says so on the admin page and on /metrics, beside the demo
        # carrier's, which answers.
        silent = free_port()
        trunk = await browser.post_json("/api/admin/trunks", {
            "name": "acme", "host": "127.0.0.1", "port": silent, "patterns": "_0X."})
        assert trunk.status == 201 and (await trunk.json())["pbx_live"] is True

        async def trunk_states() -> bool:
            # The demo carrier starts after the PBX: it answers from the next OPTIONS on.
            async with browser.http.get("/api/admin/trunks") as listing:
                states = {t["name"]: t["status"] for t in (await listing.json())["trunks"]}
            return states == {"carrier": "reachable", "acme": "unreachable"}

        await until(trunk_states, 40, step=0.5)
        async with aiohttp.ClientSession() as http, http.get(f"{product.url}/metrics") as page:
            metrics = await page.text()
        assert 'switchboard_trunk_up{trunk="carrier"} 1.0' in metrics
        assert 'switchboard_trunk_up{trunk="acme"} 0.0' in metrics
        assert 'switchboard_trunk_state{state="unreachable",trunk="acme"} 1.0' in metrics
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

    await until(counted)

    # A scanner keeps guessing from one address: the product blocks it (the PBX answers
    # 403 before any authentication), the admin page lists the block and lifts it.
    scanner, sip = "127.0.0.9", ("127.0.0.1", int(pbx_spec["ports"]["sip"]))
    answers: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(answers) < 500:
        answers.append((await sip_request(sip, "REGISTER", f"guess{len(answers)}",
                                          source=scanner)).status)
        if answers[-1] == 403:
            break
    assert answers[-1] == 403, answers[-5:]
    browser = Browser(product.url)
    try:
        assert (await browser.login("admin", admin_password)).status == 303
        async with browser.http.get("/api/admin/sip-blocks") as listed:
            assert [b["address"] for b in (await listed.json())["blocks"]] == [scanner]
        lifted = await browser.post_json(f"/api/admin/sip-blocks/{scanner}/lift", {})
        assert (await lifted.json())["applied"] is True
    finally:
        await browser.close()
    assert (await sip_request(sip, "REGISTER", "guess", source=scanner)).status == 401

    # Every figure the Grafana dashboard in the repository queries is on /metrics.
    async with aiohttp.ClientSession() as http, http.get(f"{product.url}/metrics") as page:
        exposed = await page.text()
    missing = [name for name in grafana_metric_names()
               if not re.search(rf"^(# (HELP|TYPE) )?{name}[{{ ]", exposed, re.MULTILINE)]
    assert missing == []
    assert await metric(product, "switchboard_asterisk_up") == 1

    # The PBX dies under the running product: /metrics and /status say so at once, not
    # at the next restart, and the product starts it again by itself (web.asterisk_keeper;
    # tests/integration/test_asterisk_keeper.py follows calls through that).
    for pid in asterisk_pids(pbx_marker):
        os.kill(pid, signal.SIGKILL)

    async def pbx_down() -> bool:
        return await metric(product, "switchboard_asterisk_up") == 0

    async def status_degraded() -> bool:
        async with aiohttp.ClientSession() as http, http.get(f"{product.url}/status") as page:
            return page.status == 503 and (await page.json())["ari_events"] != "connected"

    await until(pbx_down)
    await until(status_degraded)

    async def pbx_up() -> bool:
        return await metric(product, "switchboard_asterisk_up") == 1

    await until(pbx_up, within=90)

    # Ctrl-C stops the product and both Asterisk instances.
    assert await product.signal(signal.SIGINT) == 0
    assert asterisk_pids(pbx_marker) == []
    assert not (product.data / "run" / "switchboard.json").exists()

