"""Card delivery to many dashboard tabs: publish on the EventHub, time each tab's receipt.

The real dashboard (sign-in, sessions, the feed reading the store, the hub, aiohttp
WebSockets) serves in this process; the tabs are WebSockets opened by a child process
under one signed-in session (N tabs of one agent), so their reading does not compete
with the server's event loop. One more tab is *stalled*: a raw socket with a tiny
receive buffer that completes the handshake and never reads again; the figures show
whether it delays anyone. ``time.monotonic`` is the system's monotonic clock, so both
processes stamp on the same time line.

    switchboard bench dashboard --clients 1000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import resource
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from handoff.events import CARDS_TOPIC, EventHub, Offered
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
from web.dashboard import DASHBOARD, DashboardOptions, setup_dashboard
from web.dashboard.hub import HubLimits

ROUNDS = 20
PAUSE_S = 0.25  # between cards: a busy call centre, not a flood


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- the tabs (child process) ---------------------------------------------------------------


_CARD = re.compile(rb'"card_added","card":\{"handoff_id":(\d+)')


class _Tab(asyncio.Protocol):
    """One tab on a raw socket: the cheapest possible reader, so that 1000 of them in one
    process time the server's delivery, not their own parsing. Server frames are not
    masked, so a card's id is readable in the bytes as they arrive."""

    def __init__(self, request: bytes, opened: Callable[[], None]) -> None:
        self.request = request
        self.opened = opened
        self.got: dict[int, float] = {}
        self._tail = b""
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        data = self._tail + data
        if not self._upgraded:
            if b"\r\n\r\n" not in data:
                self._tail = data
                return
            self._upgraded = True
        if b'"snapshot"' in data:
            self.opened()
        for match in _CARD.finditer(data):
            self.got.setdefault(int(match[1]), at)
        self._tail = data[-64:]


def _upgrade(host: str, port: int, cookie: str, origin: str) -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
            f"Cookie: sb_session={cookie}\r\n\r\n").encode()


async def _stalled_tab(host: str, port: int, cookie: str, origin: str) -> socket.socket:
    """A tab that completes the handshake and then never reads: a laptop lid shut."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, port))
    sock.sendall(_upgrade(host, port, cookie, origin))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.to_thread(sock.recv, 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stalled tab refused: {head[:60]!r}")
    return sock


async def run_tabs(origin: str, cookie: str, clients: int) -> None:
    _raise_fd_limit()
    host, port_text = origin.removeprefix("http://").split(":")
    port = int(port_text)
    loop = asyncio.get_running_loop()
    ready, opened = asyncio.Event(), [0]

    def one_opened() -> None:
        opened[0] += 1
        if opened[0] == clients:
            ready.set()

    tabs: list[tuple[asyncio.BaseTransport, _Tab]] = []
    for i in range(clients):
        tabs.append(await loop.create_connection(
            lambda: _Tab(_upgrade(host, port, cookie, origin), one_opened), host, port))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # let the server keep up with the handshakes
    stalled = await _stalled_tab(host, port, cookie, origin)
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent says: done
    print(json.dumps([{str(k): v for k, v in tab.got.items()} for _, tab in tabs]),
          flush=True)
    stalled.close()
    for transport, _ in tabs:
        transport.close()


# ---- the dashboard and the measurement (this process) ---------------------------------------


async def measure(clients: int, rounds: int = ROUNDS) -> dict[str, Any]:
    _raise_fd_limit()
    with tempfile.TemporaryDirectory() as folder:
        store = await open_store(Path(folder))
        passwords = cheap_passwords()
        await seed_people(store, passwords)
        events = EventHub()
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        app = web.Application()
        # The send timeout is shortened so the stalled tab is found out within the run.
        setup_dashboard(app, store=store, hub=events, commands=FakeCommands(events),
                        origin=origin, secure_cookies=False,
                        options=DashboardOptions(passwords=passwords,
                                                 hub=HubLimits(send_timeout_s=2.0)))
        runner = web.AppRunner(app, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        browser = Browser(origin)
        child = None
        try:
            assert (await browser.login("alice", PASSWORD)).status == 303
            cookie = browser.session_cookie()
            assert cookie is not None
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "web.bench.dashboard", "--tabs", origin, cookie,
                str(clients), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
            )
            assert child.stdout is not None and child.stdin is not None
            line = await asyncio.wait_for(child.stdout.readline(), 180)
            if line.strip() != b"ready":
                raise RuntimeError(f"the tabs did not open: {line!r}")
            hub = app[DASHBOARD].hub
            connected = len(hub.clients)
            # One card first, not counted: it pays for SQLAlchemy's statement cache and
            # the first JSON encodings, which a running server paid long ago.
            warm = await offer_card(store, events)
            await asyncio.sleep(1.0)
            published: dict[int, float] = {}
            for _ in range(rounds):
                handoff = await offer_card(store, events, publish=False)
                published[handoff.id] = time.monotonic()
                events.publish(CARDS_TOPIC, Offered(handoff.call_id, handoff.id))
                await asyncio.sleep(PAUSE_S)
            await asyncio.sleep(1.0)
            stalled_still_connected = len(hub.clients) > clients
            child.stdin.write(b"done\n")
            await child.stdin.drain()
            data = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
            await child.wait()
        finally:
            if child is not None and child.returncode is None:
                child.kill()
                await child.wait()
            await browser.close()
            await runner.cleanup()
            await store.engine.dispose()
    latencies, missing = [], 0
    for tab in data:
        tab.pop(str(warm.id), None)
        for handoff_id, sent in published.items():
            at = tab.get(str(handoff_id))
            if at is None:
                missing += 1
            else:
                latencies.append((at - sent) * 1000)
    ms = np.array(latencies)
    per_card = [
        round(float(np.median([(tab[str(h)] - sent) * 1000 for tab in data if str(h) in tab])), 1)
        for h, sent in published.items()
    ]
    return {
        "clients": clients,
        "connected_tabs": connected,
        "cards": rounds,
        "deliveries": len(latencies),
        "missing": missing,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "stalled_tab_dropped": not stalled_still_connected,
        "median_ms_per_card": per_card,
        "cpus": os.cpu_count(),
    }


def main(clients: int = 1000, as_json: bool = False) -> int:
    result = asyncio.run(measure(clients))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['clients']} tabs (+1 stalled), {result['cards']} cards: "
              f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
              f"max {result['max_ms']} ms; {result['missing']} missing; stalled tab "
              f"{'dropped' if result['stalled_tab_dropped'] else 'still connected'}")
    return 0 if result["missing"] == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tabs", nargs=3, metavar=("ORIGIN", "COOKIE", "N"))
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.tabs:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_tabs(args.tabs[0], args.tabs[1], int(args.tabs[2])))
    else:
        sys.exit(main(args.clients, args.json))
