"""The product against an Asterisk it did not start, as docker compose deploys it.

The test plays the operator and the container runtime: it gives `switchboard config
render` and `switchboard run` every variable docker-compose.yml gives the product's
containers (the list is read from the file, so the two cannot drift), starts an
Asterisk itself from the rendered files (tests.outside_asterisk), and a carrier Asterisk
that calls in over a trunk. A desk phone takes a handoff, the dashboard plays the
call's recording (fetched through ARI), people and trunks added later reach that
Asterisk without a restart, and when it is killed and started again the product
recovers by itself. Only the images are not built here (no Docker engine runs).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import shutil
import signal
import time
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from handoff.calls import CallState
from handoff.handoffs import HandoffState
from handoff.store import Store, create_store_engine
from handoff.store.models import Call
from pbx import runtime
from pbx.ari import basic_auth_header
from pbx.trunk_config import SipTrunk
from tests.dashboard_fixtures import Browser
from tests.integration.test_handoff_move import recorded_parties
from tests.outside_asterisk import OutsideAsterisk
from tests.product_run import REPO, Product, stopped_after
from tests.sip_phone import SipPhone
from tests.waiting import until
from web.bench.cluster_rig import heard as hears_voice
from web.bench.cluster_rig import offered
from web.bench.dashboard_site import free_port
from web.bench.world import World

pytestmark = pytest.mark.integration

MAX_CALLS = 10


def compose_environment() -> dict[str, str]:
    """What docker-compose.yml gives the product's containers (render and run)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = compose["services"]["switchboard"]["environment"]
    assert env == compose["services"]["render"]["environment"]
    return {str(k): str(v) for k, v in env.items()}


@pytest_asyncio.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema, as compose's PostgreSQL service gives the product."""
    schema = f"ext_{uuid.uuid4().hex[:12]}"
    admin = create_store_engine(postgres_url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def run_cli(product: Product, env: dict[str, str], *command: str) -> str:
    """A `switchboard` command in the same environment as the product's containers."""
    proc = await asyncio.create_subprocess_exec(
        *product.argv(*command), cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    return out


async def ari(asterisk_url: str, auth: tuple[str, str], method: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=basic_auth_header(*auth)) as http, http.request(
            method, f"{asterisk_url}{path}") as resp:
        body = await resp.text()
        return resp.status, (await resp.json() if body.startswith(("[", "{")) else body)


async def status(product: Product) -> dict[str, Any]:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{product.url}/status") as page:
            return dict(await page.json())
    except aiohttp.ClientError:
        return {}


async def test_the_product_runs_against_an_asterisk_it_did_not_start(
    tmp_path: Path, state_dir: Path, database: str,
) -> None:
    installation = runtime.locate()
    outside = OutsideAsterisk(installation, f"/srv/switchboard/ext-{os.getpid()}")
    pbx_ports = runtime.allocate_ports(runtime.PortRequest(), max_calls=MAX_CALLS)
    taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
    carrier_ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken,
                                           max_calls=MAX_CALLS)
    ari_password, ami_secret = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    # Compose's variables, with this machine's values: the chroot's folders stand for the
    # Asterisk container's, its configuration folder for the shared volume.
    ours = {
        "SWITCHBOARD_ASTERISK": f"http://switchboard@127.0.0.1:{pbx_ports.http}/ari",
        "SWITCHBOARD_ARI_PASSWORD": ari_password,
        "SWITCHBOARD_AMI_SECRET": ami_secret,
        "SWITCHBOARD_ASTERISK__CONFIG_DIR": str(outside.config_dir),
        "SWITCHBOARD_ASTERISK__ETC_DIR": outside.etc_inside,
        "SWITCHBOARD_ASTERISK__STATE_DIR": outside.inside_root,
        "SWITCHBOARD_ASTERISK__MODULES_DIR": "/usr/lib/x86_64-linux-gnu/asterisk/modules",
        "SWITCHBOARD_ASTERISK__SHARE_DIR": "/usr/share/asterisk",
        "SWITCHBOARD_DATABASE__URL": database,
        "SWITCHBOARD_DEMO__TEST_CALLER": "false",
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "data"),
    }
    assert set(ours) == set(compose_environment()), "compose and this test give the same"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | ours
    product = Product(tmp_path / "data", free_port(), run_env=env, settings=[
        # The ports of this run (compose keeps Asterisk's defaults), and the carrier.
        f"asterisk.http_port={pbx_ports.http}", f"asterisk.sip_port={pbx_ports.sip}",
        f"asterisk.ami_port={pbx_ports.ami}", f"asterisk.max_calls={MAX_CALLS}",
        f"asterisk.rtp_start={pbx_ports.rtp_start}", f"asterisk.rtp_end={pbx_ports.rtp_end}",
        "trunks.0.name=carrier", "trunks.0.host=127.0.0.1",
        f"trunks.0.port={carrier_ports.sip}",
    ])
    outside.config_dir.mkdir(parents=True, exist_ok=True)
    carrier = runtime.new_instance(
        installation, f"ext{os.getpid()}-carrier", state_dir, ports=carrier_ports,
        max_calls=MAX_CALLS, app="carrier",
        trunks=(SipTrunk("switchboard", "127.0.0.1", pbx_ports.sip),))
    await carrier.start()
    try:
        async with stopped_after(product):
            await _scenario(product, env, outside, carrier, database=database,
                            pbx_sip=pbx_ports.sip)
    finally:
        await outside.stop()
        await carrier.stop()
        shutil.rmtree(outside.host_root, ignore_errors=True)


async def _scenario(product: Product, env: dict[str, str], outside: OutsideAsterisk,
                    carrier: runtime.AsteriskInstance, *, database: str, pbx_sip: int) -> None:
    # Before Asterisk first starts: a desk phone's person and an assistant's number in
    # the store, then every file rendered from settings, store and environment.
    added = await run_cli(product, env, "user", "add", "bea", "--role", "agent",
                          "--phone", "desk")
    bea_password = re.search(r"^bea: (\S+)$", added, re.M)[1]  # type: ignore[index]
    bea_sip = re.search(r"SIP account: (\S+) / (\S+)$", added, re.M)
    assert bea_sip is not None
    await run_cli(product, env, "assistant", "add", "sales", "--number", "2100",
                  "--engine", "builtin")
    await run_cli(product, env, "config", "render",
                  "--state-folders", str(outside.host_root))  # as compose's render does
    conf = {p.name: p.read_text() for p in outside.config_dir.glob("*.conf")}
    assert "[agent-bea]" in conf["pjsip.conf"] and "[carrier]" in conf["pjsip.conf"]
    assert "exten => 2100,1" in conf["extensions.conf"]
    # The catch-all for unknown numbers goes to the controller's app too.
    catch_all = conf["extensions.conf"].split("exten => _[+0-9].,1,", 1)[1]
    assert "Stasis(switchboard,unknown," in catch_all.split("exten =>", 1)[0]
    assert env["SWITCHBOARD_AMI_SECRET"] in conf["manager.conf"]
    await _started_before_its_asterisk(product, outside)
    # The operator's Asterisk lacks one module the product relies on (the ACL that
    # refuses blocked addresses).
    modules = outside.config_dir / "modules.conf"
    modules.write_text(modules.read_text().replace("require = res_pjsip_acl.so\n", ""))
    await outside.start()
    ari_url = env["SWITCHBOARD_ASTERISK"].replace("switchboard@", "")
    auth = ("switchboard", env["SWITCHBOARD_ARI_PASSWORD"])

    # Start-up refuses an Asterisk without a module the product relies on, or whose AMI
    # account is not the rendered one, and says which.
    with pytest.raises(AssertionError, match=r"lacks modules .*res_pjsip_acl\.so"):
        await product.start()
    assert "Loaded" in await outside.cli("module load res_pjsip_acl.so")
    product.run_env = env | {"SWITCHBOARD_AMI_SECRET": "not-the-secret"}
    with pytest.raises(AssertionError, match="another secret than SWITCHBOARD_AMI_SECRET"):
        await product.start()
    product.run_env = env

    await product.start()  # returns once /status is ok
    assert (await status(product))["asterisk"].startswith("Asterisk 22.")

    engine = create_store_engine(database)
    store = Store(engine)
    world = World(carrier.ari_url, carrier.ari_auth)
    await world.start()
    admin = Browser(product.url)
    bea = Browser(product.url)
    try:
        async with SipPhone(bea_sip[1], bea_sip[2], ("127.0.0.1", pbx_sip)) as phone:
            assert (await bea.login("bea", bea_password)).status == 303
            assert (await bea.post_json("/api/duty", {"on_duty": True})).status == 200

            # A call over the trunk reaches the receptionist; the caller's 0 asks for a
            # person; Bea accepts and her desk phone takes the caller.
            caller = await world.place_call("2000")
            call_id = (await until(lambda: open_call(store, caller, CallState.WITH_AI),
                                   30, step=0.2, why="the call never reached the AI")).id
            await until(lambda: hears_voice(world, caller, time.monotonic() - 1), 30,
                        step=0.2, why="the caller never heard the receptionist")
            await world.ari.channels.send_dtmf(world._outbound[caller], "0")
            handoff_id = await until(lambda: offered(store, call_id), 30, step=0.2,
                                     why="no card was offered to Bea")
            accepted = await bea.post_json(f"/api/handoffs/{handoff_id}/accept", {})
            assert accepted.status == 200, await accepted.text()
            dialog = await phone.wait_call(15)
            await phone.wait_hears(dialog, "caller")
            await until(lambda: world.first_heard(caller, "agent", 0), 15,
                        why="the caller never heard Bea")
            await until(lambda: connected(store, handoff_id), 15, step=0.2,
                        why="the handoff never connected")
            await world.hang_up(caller)
            await until(lambda: ended(store, call_id), 20, step=0.2, why="the call never ended")

            # The dashboard plays the call's recording: fetched from Asterisk over ARI
            # and gone from its spool.
            async with bea.http.get(f"/api/calls/{call_id}/recording.wav") as audio:
                assert audio.status == 200, await audio.text()
                recording = await audio.read()
            path = product.data / "heard.wav"
            path.write_bytes(recording)
            heard = recorded_parties(path)
            assert heard["caller"] > 0 and heard["agent"] > 0, heard
            with wave.open(io.BytesIO(recording)) as wav:
                assert wav.getnframes() > 8000
            _, stored = await ari(ari_url, auth, "GET", "/recordings/stored")
            assert f"call-{call_id}" not in [r["name"] for r in stored]
            await phone.close()

        # An agent and a trunk added while it runs reach that Asterisk at once.
        reset = await run_cli(product, env, "user", "passwd", "admin")
        admin_password = re.search(r"^admin: (\S+)$", reset, re.M)[1]  # type: ignore[index]
        assert (await admin.login("admin", admin_password)).status == 303
        made = await admin.post_json("/api/admin/agents", {
            "login": "cy", "display_name": "Cy", "role": "agent", "endpoint_kind": "deskphone"})
        assert made.status == 201 and (await made.json())["endpoint_live"] is True
        trunk = await admin.post_json("/api/admin/trunks", {
            "name": "acme", "host": "127.0.0.1", "port": free_port(), "patterns": "_0X."})
        assert trunk.status == 201 and (await trunk.json())["pbx_live"] is True
        for endpoint in ("agent-cy", "acme"):
            assert (await ari(ari_url, auth, "GET", f"/endpoints/PJSIP/{endpoint}"))[0] == 200

        # The Asterisk dies and is started again by its supervisor, not by the product:
        # the product notices, then recovers by itself, with the files it last wrote.
        await outside.kill()
        await until(lambda: degraded(product), 30, step=0.2, why="/status never degraded")
        await outside.start()
        await until(product.healthy, 60, step=0.5, why="the product never recovered")
        assert (await ari(ari_url, auth, "GET", "/endpoints/PJSIP/agent-cy"))[0] == 200
        caller = await world.place_call("2000")
        call_id = (await until(lambda: open_call(store, caller, CallState.WITH_AI), 30,
                               step=0.2, why="no call after the restart")).id
        await until(lambda: hears_voice(world, caller, time.monotonic() - 1), 30, step=0.2,
                    why="the caller never heard the receptionist after the restart")
        await world.hang_up(caller)
        await until(lambda: ended(store, call_id), 20, step=0.2, why="the call never ended")
    finally:
        await admin.close()
        await bea.close()
        await world.close()
        await engine.dispose()

    # Stopping the product leaves that Asterisk running (it is not the product's), with
    # no channel or bridge of the product's left in it.
    await product.signal(signal.SIGINT)
    assert outside.running
    for left in ("/channels", "/bridges"):
        assert (await ari(ari_url, auth, "GET", left))[1] == []


async def open_call(store: Store, caller: str, state: CallState) -> Call | None:
    async with store.transaction() as tx:
        rows = [c for c in await tx.calls.open_calls()
                if c.caller_number == caller and c.state is state]
    return rows[0] if rows else None


async def connected(store: Store, handoff_id: int) -> bool:
    async with store.transaction() as tx:
        return (await tx.handoffs.get(handoff_id)).state is HandoffState.CONNECTED


async def ended(store: Store, call_id: str) -> bool:
    async with store.transaction() as tx:
        return (await tx.calls.get(call_id)).state is CallState.ENDED


async def degraded(product: Product) -> bool:
    return (await status(product)).get("status") == "degraded"


async def _started_before_its_asterisk(product: Product, outside: OutsideAsterisk) -> None:
    """R25: compose starts both containers at once; Switchboard may be first. It listens
    at once, /status says 503 and that it waits for Asterisk, and it comes up by itself
    once Asterisk answers."""
    await product.launch()

    async def waiting() -> dict[str, Any] | None:
        body = await status(product)
        return body if body.get("waiting_for") == "asterisk" else None

    body = await until(waiting, 60, step=0.2, why="/status never said it waits for Asterisk")
    assert body["status"] == "starting" and body["reason"]
    async with aiohttp.ClientSession() as http, http.get(f"{product.url}/login") as page:
        assert page.status == 503
    await outside.start()
    await until(product.healthy, 120, step=0.5,
                why=lambda: "it did not come up once Asterisk did:\n" + "".join(product.output))
    assert "Switchboard is running." in "".join(product.output)
    assert await product.signal(signal.SIGINT) == 0
    await outside.stop()
