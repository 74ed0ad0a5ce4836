"""Caller-ID injection over the trunk (R15 of issue 16): names and numbers a carrier
sends with `;`, `$(…)`, backticks, quotes, markup and an escaped newline are stored as
Asterisk received them, shown escaped, and never evaluated: no shell runs (AST-2010-002's
CALLERID-into-System class), the dialplan passes only the dialled digits, AMI's framing
holds, and logs carry no caller text. A raw CR/LF cannot reach the PBX at all: SIP's
quoted-string excludes it, and the carrier's Asterisk does not place such a call."""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from handoff.calls import CallState
from handoff.events import EventHub
from handoff.store import Store
from pbx import rootfs
from pbx.ami import AmiMessage
from tests.dashboard_fixtures import PASSWORD, Browser, FakeCommands, cheap_passwords, free_port
from tests.integration.asterisk_helpers import Pair, ami_client, ari
from tests.waiting import until
from web.bench.rig import rig
from web.bench.world import World, local_world
from web.dashboard import DashboardOptions, setup_dashboard

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

MARK = f"/tmp/sb-r15-{uuid.uuid4().hex[:8]}"
# (name, number) as the carrier sends them, and the number the PBX receives: in a SIP
# URI `;` starts a parameter, so what follows it never is the number. (Asterisk keeps
# the first 50-odd characters of a name.)
SENT = [
    (f'<script>x</script>"; $(touch {MARK}-a)', "+15550101", "+15550101"),
    (f"`touch {MARK}-b`'); DROP TABLE calls;--", f"0612$(touch {MARK}-c)",
     f"0612$(touch {MARK}-c)"),
    # SIP's quoted-pair: the PBX reads "\\n" as "n", never as a line break.
    ("Mallory \\n Event: Injected", f"+15550103;$(touch {MARK}-d)", "+15550103"),
]


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


@contextlib.contextmanager
def logged() -> Iterator[list[str]]:
    """The product's log lines at info and above, as text (records would keep what their
    arguments hold, database cursors included, alive)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(logging.INFO)
    loggers = [logging.getLogger(name) for name in ("handoff", "pbx", "web")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield lines
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def history_page(store: Store, sam_id: int) -> str:
    """The history page as a supervisor's browser gets it, from the rig's own store."""
    passwords = cheap_passwords()
    async with store.transaction() as tx:
        await tx.agents.set_password_hash(sam_id, passwords.hash(PASSWORD))
    events, port = EventHub(), free_port()
    app = web.Application()
    setup_dashboard(app, store=store, hub=events, commands=FakeCommands(events, store),
                    origin=f"http://127.0.0.1:{port}", secure_cookies=False,
                    options=DashboardOptions(passwords=passwords))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    browser = Browser(f"http://127.0.0.1:{port}")
    try:
        assert (await browser.login("sam")).status == 303
        async with browser.http.get("/history") as page:
            assert page.status == 200
            return await page.text()
    finally:
        await browser.close()
        await runner.cleanup()


async def test_caller_ids_with_shell_and_markup_are_stored_literally_and_never_run(
    quiet_pair: Pair, world: World, tmp_path: Path,
) -> None:
    announced: dict[str, tuple[str, str]] = {}

    async def on_new_channel(event: AmiMessage) -> None:
        announced[str(event["Uniqueid"])] = (str(event["CallerIDName"]),
                                             str(event["CallerIDNum"]))

    with logged() as lines:
        async with rig(quiet_pair.pbx, world, tmp_path / "db.sqlite") as r, \
                ami_client(quiet_pair.pbx) as ami:
            ami.on("Newchannel", on_new_channel)
            await ami.wait_ready(10)
            placed = [await r.place_call(wait_ai=False, caller_name=name, caller_number=number)
                      for name, number, _ in SENT]
            await until(lambda: sum(1 for c in r.control.calls.values() if c.ai) == len(SENT),
                        why="the calls did not all reach the AI")
            seen = {}
            for live in r.control.calls.values():
                _, channel = await ari(quiet_pair.pbx, "GET", f"/channels/{live.caller}")
                seen[live.call_id] = channel
            for call in placed:
                await r.hang_up_caller(call)

            async def all_ended() -> bool:
                async with r.store.transaction() as tx:
                    return all([(await tx.calls.get(i)).state is CallState.ENDED for i in seen])

            await until(all_ended)
            await until(lambda: not r.control.calls, why="the controller still holds calls")
            async with r.store.transaction() as tx:
                stored = {i: await tx.calls.get(i) for i in seen}
                audit = await tx.audit.recent(100)
                sam = await tx.agents.by_login("sam")
            assert sam is not None
            html = await history_page(r.store, sam.id)

    by_number = {call.caller_number: call for call in stored.values()}
    assert set(by_number) == {received for _, _, received in SENT}
    for _, _, received in SENT:
        row = by_number[received]
        channel = seen[row.id]
        # Stored as Asterisk received it: nothing of ours rewrote, cut or ran it.
        assert (row.caller_name, row.caller_number) == (channel["caller"]["name"], received)
        assert any(bad in f"{row.caller_name} {row.caller_number}"
                   for bad in ("$(touch", "DROP TABLE", "Event: Injected"))
        # AMI announced the same number, and the name in its own escaping (a quote and
        # a backslash escaped once more): its framing intact, no header from a caller.
        ami_name, ami_number = announced[channel["id"]]
        assert ami_number == received
        assert re.sub(r"\\(.)", r"\1", ami_name) == channel["caller"]["name"], ami_name
        # The dialplan handed Stasis the dialled digits only (FILTER), never caller text.
        assert channel["dialplan"]["context"] == "from-trunk"
        assert channel["dialplan"]["app_data"].endswith(",2000"), channel["dialplan"]
    assert ami.stats.bad_frames == 0 and ami.stats.errors == 0
    # Shown escaped, never as markup; the SQL-looking name is plain text in a row.
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and f"$(touch {MARK}-c)" in html
    assert "&#39;); DROP TABLE calls;--" in html
    # No shell ran, on this host or in Asterisk's root.
    root = rootfs.default_cache_dir() / "asterisk-rootfs"
    for suffix in "abcd":
        for where in (Path(f"{MARK}-{suffix}"), root / f"{MARK}-{suffix}".lstrip("/")):
            assert not where.exists(), where
    # Logs carry callers' numbers masked and never their names.
    for text in lines:
        assert "$(touch" not in text and "DROP TABLE" not in text, text
    # The audit log (people's actions) holds nothing a caller wrote.
    assert not [a for a in audit if "$(touch" in str(a.detail) or "DROP" in str(a.detail)]
