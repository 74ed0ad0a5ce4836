"""One floor over two nodes: two web processes on one PostgreSQL see each other's cards
through LISTEN/NOTIFY, and one agent wins a card whichever node their desk is served by.

This test process plays node A's controller (its own EventHub bridged the same way):
the card it raises reaches the desks served by the two web processes only through
PostgreSQL, since none of them shares memory with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url

from handoff.events import CARDS_TOPIC, Event, EventHub, EventType, Subscription
from handoff.shared_events import SharedEvents
from handoff.store import Store, create_store_engine, upgrade_to_head
from web.bench.dashboard_site import Browser, cheap_passwords, free_port, offer_card, seed_people


@pytest_asyncio.fixture
async def shared_store(postgres_url: str) -> AsyncIterator[str]:
    """A fresh schema on the session's PostgreSQL, migrated, with the board's people."""
    schema = f"floor_{uuid.uuid4().hex[:12]}"
    admin = create_store_engine(postgres_url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_url).update_query_dict(
        {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    engine = create_store_engine(url)
    try:
        await upgrade_to_head(engine)
        await seed_people(Store(engine), cheap_passwords())
        yield url
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@contextlib.asynccontextmanager
async def web_nodes(url: str, count: int) -> AsyncIterator[list[str]]:
    """``count`` web processes (tests.floor_node) on the shared store, started together;
    yields their origins."""
    ports = [free_port() for _ in range(count)]
    processes = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.floor_node", url, str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for port in ports]
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line.strip() == b"ready", f"a web node did not start: {line!r}"
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
            await asyncio.wait_for(process.wait(), 10)


class Desk:
    """An agent's desk socket; what it received while waiting for one thing is kept for
    whatever the test waits for next."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.unread: list[dict[str, Any]] = []

    async def next(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            for message in self.unread:
                if wanted(message):
                    self.unread.remove(message)
                    return message
            self.unread.append(await self.ws.receive_json(timeout=10))

    async def op(self, op: str) -> dict[str, Any]:
        return await self.next(lambda message: message.get("op") == op)

    async def accept(self, handoff_id: int) -> dict[str, Any]:
        await self.ws.send_json({"type": "accept", "handoff_id": handoff_id,
                                 "ref": handoff_id})
        return await self.next(lambda message: message.get("type") == "reply"
                               and message.get("ref") == handoff_id)


@contextlib.asynccontextmanager
async def desk(origin: str, login: str) -> AsyncIterator[Desk]:
    """``login`` signed in on the node at ``origin``, on duty, their desk's socket open
    past its snapshot."""
    browser = Browser(origin)
    try:
        assert (await browser.login(login)).status == 303
        assert (await browser.post_json("/api/duty", {"on_duty": True})).status == 200
        async with browser.http.ws_connect("/ws", headers={"Origin": origin},
                                           heartbeat=None) as ws:
            opened = Desk(ws)
            assert (await opened.next(lambda _: True))["type"] == "snapshot"
            yield opened
    finally:
        await browser.close()


async def test_a_card_raised_on_one_node_shows_on_every_nodes_desks_and_one_agent_wins_it(
    shared_store: str,
) -> None:
    controller_hub = EventHub()
    controller = SharedEvents(controller_hub, shared_store)
    listening = asyncio.Event()
    link = asyncio.create_task(controller.run(listening))
    engine = create_store_engine(shared_store)
    try:
        await asyncio.wait_for(listening.wait(), 10)
        async with (
            web_nodes(shared_store, 2) as (node_1, node_2),
            desk(node_1, "alice") as alice, desk(node_2, "bob") as bob,
            controller_hub.subscribe(CARDS_TOPIC) as controller_news,
        ):
            handoff = await offer_card(Store(engine), controller_hub)
            for ws in (alice, bob):
                added = await ws.op("card_added")
                assert added["card"]["handoff_id"] == handoff.id

            # Both click Accept at once, each on their own node: the database decides.
            replies = await asyncio.gather(alice.accept(handoff.id), bob.accept(handoff.id))
            statuses = sorted(reply["status"] for reply in replies)
            assert statuses == [200, 409], replies
            lost = next(reply for reply in replies if reply["status"] == 409)
            assert lost["body"]["error"] == "already_taken"
            winner = next(r for r in replies if r["status"] == 200)
            # The card leaves both desks: the loser's node hears the winner's "taken".
            for ws in (alice, bob):
                removed = await ws.op("card_removed")
                assert removed["handoff_id"] == handoff.id
            # And node A's controller, whose call it is, hears who took it.
            taken = await asyncio.wait_for(_next_of(controller_news, EventType.TAKEN), 10)
            assert taken["handoff_id"] == handoff.id
            assert lost["body"]["taken_by"]["id"] == taken["agent_id"]
            assert winner["body"] == {"accepted": handoff.id}

            # The web nodes' database links drop (a PostgreSQL fail-over, a network cut)
            # and a card is raised before they listen again: its notification never
            # reaches them, yet it shows on the free agent's desk once they reconnect.
            async with engine.begin() as connection:
                cut = await connection.scalar(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'switchboard web-%'"))
            assert cut == 4  # each node's listening and sending connections
            second = await offer_card(Store(engine), controller_hub,
                                      caller_number="+33198765432")
            free = alice if lost is replies[0] else bob
            while (await free.op("card_added"))["card"]["handoff_id"] != second.id:
                pass  # the rebuilt board's cards, the second one among them
    finally:
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        await engine.dispose()


async def _next_of(news: Subscription, kind: EventType) -> Event:
    while True:
        event = await news.get()
        if event["type"] == kind:
            return event
