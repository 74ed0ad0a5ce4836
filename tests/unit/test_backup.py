"""`switchboard backup` and `restore`, run as an admin runs them: an installation's
history and recordings come back in an empty data folder (SQLite, or PostgreSQL) and the
dashboard serves them as before; a restore never fills a database that holds data."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from handoff.events import EventHub
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.dashboard_fixtures import Browser, FakeCommands, cheap_passwords, free_port, seed_people
from tests.product_run import REPO
from tests.tools_fixtures import FakeCallbacks, FakeSupervision, finished_call, write_wav
from web.dashboard import DashboardOptions, setup_dashboard
from web.dashboard.tools import Tools, setup_tools


async def switchboard(*argv: str) -> tuple[int, str]:
    """The command line in its own process; its exit code and everything it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "web.cli", *argv, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@contextlib.asynccontextmanager
async def serve(store: Store, recordings: Path) -> AsyncIterator[str]:
    """The dashboard over an existing store: nobody seeded, nothing faked but the PBX."""
    port, events = free_port(), EventHub()
    origin = f"http://127.0.0.1:{port}"
    app = web.Application()
    setup_dashboard(app, store=store, hub=events, commands=FakeCommands(events, store),
                    origin=origin, secure_cookies=False,
                    options=DashboardOptions(passwords=cheap_passwords()))
    setup_tools(app, Tools(recordings=recordings, supervision=FakeSupervision,
                           callbacks=FakeCallbacks))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield origin
    finally:
        await runner.cleanup()


async def history_seen_by(origin: str, login: str) -> tuple[list[dict[str, object]], bytes]:
    """The history the person sees, and the first call's recording as downloaded."""
    browser = Browser(origin)
    try:
        assert (await browser.login(login)).status == 303
        async with browser.http.get("/api/history") as response:
            calls = (await response.json())["calls"]
        async with browser.http.get(f"/api/calls/{calls[0]['id']}/recording.wav") as response:
            assert response.status == 200
            audio = await response.read()
    finally:
        await browser.close()
    return calls, audio


async def test_a_backup_restores_into_an_empty_installation_with_the_same_history(
    tmp_path: Path, store_url: str,
) -> None:
    # The installation as it runs: SQLite in its data folder, a call with its recording.
    source = tmp_path / "source"
    engine = create_store_engine(f"sqlite:///{source / 'switchboard.db'}")
    (source / "recordings").mkdir(parents=True)
    await upgrade_to_head(engine)
    store = Store(engine)
    people = await seed_people(store, cheap_passwords())
    wav = write_wav(source / "recordings" / "call-x.wav")
    await finished_call(store, number="+33111111111", agent_id=people["alice"].id)
    await finished_call(store, number="+33222222222", agent_id=people["alice"].id,
                        recording=wav)
    settings_file = tmp_path / "switchboard.toml"
    settings_file.write_text("[desk]\nwrap_up_s = 20\n")
    try:
        async with serve(store, source / "recordings") as origin:
            before = await history_seen_by(origin, "alice")
    finally:
        await engine.dispose()

    archive = tmp_path / "backup.tar.gz"
    code, out = await switchboard("--config", str(settings_file), "--set",
                                  f"data_dir={source}", "backup", "--out", str(archive))
    assert code == 0, out
    assert "2 calls" in out and "1 recording files" in out
    assert archive.stat().st_mode & 0o077 == 0  # password hashes and SIP secrets inside

    recorded = wav.read_bytes()
    shutil.rmtree(source)  # the old machine is gone

    # A new machine: an empty data folder and an empty database (SQLite or PostgreSQL).
    target = tmp_path / "target"
    restore = ("--config", str(settings_file), "--set", f"data_dir={target}",
               "--set", f"database.url={store_url}", "restore", str(archive))
    code, out = await switchboard(*restore)
    assert code == 0, out
    assert (target / "restored-settings" / "switchboard.toml").read_text() == \
        settings_file.read_text()

    engine = create_store_engine(store_url)
    try:
        store = Store(engine)
        async with serve(store, target / "recordings") as origin:
            after = await history_seen_by(origin, "alice")
        assert after == before
        assert after[1] == recorded
        # New rows after a restore get new ids (PostgreSQL's sequences were moved on).
        async with store.transaction() as tx:
            newcomer = await tx.agents.create(login="zed", display_name="Zed",
                                              sip_user="sb-zed", sip_password="x")
        assert newcomer.id > max(p.id for p in people.values())
    finally:
        await engine.dispose()

    # A second restore would merge into live history: refused, with what to do.
    code, out = await switchboard(*restore)
    assert code == 1
    assert "not empty" in out and "fresh data folder" in out
    code, out = await switchboard("--set", f"data_dir={tmp_path / 'other'}", "--set",
                                  f"database.url={store_url}", "restore", str(archive))
    assert code == 1
    assert "already holds data" in out and "empty database" in out


@pytest.mark.parametrize("content", [b"not a tarball", None])
async def test_a_file_that_is_not_a_backup_is_refused_and_nothing_is_written(
    tmp_path: Path, content: bytes | None,
) -> None:
    archive = tmp_path / "backup.tar.gz"
    if content is None:  # a tarball, but not ours
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(__file__, arcname="hello.py")
    else:
        archive.write_bytes(content)
    code, out = await switchboard("--set", f"data_dir={tmp_path / 'data'}", "restore",
                                  str(archive))
    assert code == 1
    assert "not a Switchboard backup" in out
    assert not (tmp_path / "data" / "switchboard.db").exists()
