"""One node's web side for the shared-floor test, in a process of its own.

The real dashboard (routes, WebSocket hub, feed) on the shared PostgreSQL store, its
EventHub bridged to the other nodes' by :class:`handoff.shared_events.SharedEvents`.
Accept is the store's conditional UPDATE (FakeCommands with a store) and the winner's
node publishes "taken", as the call controller does once it has the card
(handoff.live.move); nothing else of a controller runs here.

``python -m tests.floor_node DATABASE_URL PORT`` prints ``ready`` once it serves and
listens, and stops on SIGTERM or when its stdin closes (the test process gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from handoff.events import CARDS_TOPIC, EventHub, Taken
from handoff.shared_events import SharedEvents
from handoff.store import Store, create_store_engine
from web.bench.dashboard_site import FakeCommands, cheap_passwords
from web.dashboard import DashboardOptions, setup_dashboard
from web.proxies import real_client


class NodeCommands(FakeCommands):
    async def accept(self, handoff_id: int, agent_id: int) -> None:
        await super().accept(handoff_id, agent_id)
        self.events.publish(CARDS_TOPIC, Taken(handoff_id, agent_id))


async def serve(database_url: str, port: int) -> None:
    engine = create_store_engine(database_url)
    store, hub = Store(engine), EventHub()
    shared = SharedEvents(hub, database_url, node=f"web-{port}")
    listening = asyncio.Event()
    link = asyncio.create_task(shared.run(listening), name="shared events")
    app = web.Application(middlewares=[real_client(())])
    setup_dashboard(app, store=store, hub=hub, commands=NodeCommands(hub, store),
                    origin=f"http://127.0.0.1:{port}", secure_cookies=False,
                    options=DashboardOptions(passwords=cheap_passwords()))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def stdin_readable() -> None:
        # The test never writes: readable means closed, its process gone.
        if not sys.stdin.read():
            stop.set()

    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    try:
        await asyncio.wait_for(listening.wait(), 10)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())
        await runner.cleanup()
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
