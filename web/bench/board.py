"""The supervisor board's update delay with many live calls and their transcripts flowing.

The real dashboard (sign-in, the feed, the hub, aiohttp WebSockets, the board's read
APIs on SQLite) serves in this process; supervisors' tabs are WebSockets of one signed-in
supervisor. Every live call's AI says a line a second (stored, then published as the AI
control API does), and new callers keep arriving. Measured, from publishing to a tab's
receipt:

- a transcript line (``transcript_line``), which the board adds to an open transcript
  as it arrives;
- a change to the list of calls (``board_changed``), after which the page re-reads
  ``/api/supervisor/calls`` and ``/api/supervisor/floor``; the time of that re-read with
  every call up is measured too, and the sum is what a supervisor waits for a new row.

The tabs read in this same process, so their parsing competes with the server on the
same event loop: the figures are an upper bound for the server.

    switchboard bench dashboard --board --calls 50 --json
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from handoff.calls import Speaker
from handoff.events import (
    CARDS_TOPIC,
    EventHub,
    Offered,
    TranscriptLine,
    publish_transcript_line,
)
from handoff.store import Store
from web.bench.dashboard_site import (
    PASSWORD,
    Browser,
    FakeCommands,
    cheap_passwords,
    free_port,
    offer_card,
    open_store,
    seed_people,
)
from web.dashboard import DashboardOptions, setup_dashboard

ROUNDS = 20  # lines per call: one a second for twenty seconds
NEW_CALL_EVERY = 2  # rounds between two callers arriving


@dataclass
class Tab:
    """One supervisor's board: when each line and each list change reached it."""

    lines: dict[str, float] = field(default_factory=dict)
    changes: dict[str, float] = field(default_factory=dict)

    async def read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            at = time.monotonic()
            body = json.loads(message.data)
            if body.get("op") == "transcript_line":
                self.lines.setdefault(body["text"], at)
            elif body.get("op") == "board_changed" and "call_id" in body:
                self.changes.setdefault(body["call_id"], at)


@asynccontextmanager
async def serving(folder: Path) -> AsyncIterator[tuple[str, Store, EventHub]]:
    store = await open_store(folder)
    passwords = cheap_passwords()
    await seed_people(store, passwords)
    events = EventHub()
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    app = web.Application()
    setup_dashboard(app, store=store, hub=events, commands=FakeCommands(events, store),
                    origin=origin, secure_cookies=False,
                    options=DashboardOptions(passwords=passwords))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield origin, store, events
    finally:
        await runner.cleanup()
        await store.engine.dispose()


async def _say(store: Store, events: EventHub, call_id: str, text: str) -> float:
    """A line as the AI control API posts it; returns when it was published."""
    async with store.transaction() as tx:
        segment = await tx.transcripts.append(call_id, Speaker.AI, text)
    sent = time.monotonic()
    publish_transcript_line(events, TranscriptLine(call_id, segment.speaker.value,
                                                   segment.text, segment.at.isoformat()))
    return sent


async def _reread(browser: Browser) -> float:
    """What the page does after a board_changed: both lists, side by side."""
    started = time.monotonic()

    async def get(path: str) -> None:
        async with browser.http.get(path) as response:
            response.raise_for_status()
            await response.read()

    await asyncio.gather(get("/api/supervisor/calls"), get("/api/supervisor/floor"))
    return time.monotonic() - started


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.array(values) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2)}


async def measure(calls: int = 50, tabs: int = 5, rounds: int = ROUNDS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        async with serving(Path(folder)) as (origin, store, events):
            supervisor = Browser(origin)
            readers: list[asyncio.Task[None]] = []
            sockets: list[aiohttp.ClientWebSocketResponse] = []
            try:
                assert (await supervisor.login("sam", PASSWORD)).status == 303
                boards = [Tab() for _ in range(tabs)]
                for board in boards:
                    socket = await supervisor.http.ws_connect("/ws", headers={"Origin": origin})
                    sockets.append(socket)
                    readers.append(asyncio.create_task(board.read(socket)))
                live = [(await offer_card(store, events, caller_number=f"+4420{n:07d}")).call_id
                        for n in range(calls)]
                # Not counted: the first line of every call and the first re-read pay for
                # SQLAlchemy's statement cache, which a running server paid long ago.
                for call_id in live:
                    await _say(store, events, call_id, f"warm {call_id}")
                await _reread(supervisor)
                lines: dict[str, float] = {}
                arrivals: dict[str, float] = {}
                rereads: list[float] = []
                for r in range(rounds):
                    round_started = time.monotonic()
                    for i, call_id in enumerate(live):
                        text = f"line {r}-{i}"
                        lines[text] = await _say(store, events, call_id, text)
                        # Spread over the second, as fifty conversations are.
                        await asyncio.sleep(max(0.0, round_started + (i + 1) / calls
                                                - time.monotonic()))
                    if r % NEW_CALL_EVERY == 0:
                        handoff = await offer_card(store, events, publish=False,
                                                   caller_number=f"+4421{r:07d}")
                        arrivals[handoff.call_id] = time.monotonic()
                        events.publish(CARDS_TOPIC, Offered(handoff.call_id, handoff.id))
                        rereads.append(await _reread(supervisor))
                await asyncio.sleep(1.0)  # the last lines' way to the tabs
            finally:
                for socket in sockets:
                    await socket.close()
                await asyncio.gather(*readers, return_exceptions=True)
                await supervisor.close()
    line_delays = [tab.lines[text] - sent for tab in boards
                   for text, sent in lines.items() if text in tab.lines]
    change_delays = [tab.changes[call_id] - sent for tab in boards
                     for call_id, sent in arrivals.items() if call_id in tab.changes]
    missing = (len(lines) + len(arrivals)) * tabs - len(line_delays) - len(change_delays)
    change = _ms(change_delays)
    reread = _ms(rereads)
    return {
        "calls": calls,
        "supervisor_tabs": tabs,
        "lines_per_second": calls,
        "lines": len(lines),
        "new_calls": len(arrivals),
        "missing": missing,
        "transcript_line": _ms(line_delays),
        "list_change": change,
        "list_reread": reread,
        # A new row on the board: the delta's way plus the page's re-read (medians).
        "new_row_p50_ms": (round(change["p50_ms"] + reread["p50_ms"], 2)
                           if change["p50_ms"] is not None and reread["p50_ms"] is not None
                           else None),
        "cpus": os.cpu_count(),
    }


def main(calls: int = 50, as_json: bool = False) -> int:
    result = asyncio.run(measure(calls))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        line, reread = result["transcript_line"], result["list_reread"]
        print(f"{result['calls']} live calls, {result['supervisor_tabs']} supervisor tabs, "
              f"{result['lines']} transcript lines: a line reaches the board in "
              f"p50 {line['p50_ms']} ms (p99 {line['p99_ms']} ms); a new call's row in "
              f"p50 {result['new_row_p50_ms']} ms (re-read p99 {reread['p99_ms']} ms); "
              f"{result['missing']} missing")
    return 0 if result["missing"] == 0 else 1
