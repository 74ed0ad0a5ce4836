"""One floor over several nodes: the events of every node's hub reach the others'.

In a cluster each node runs its own Asterisk, controller and dashboard, and all share
one PostgreSQL. A card raised by node A's controller must show on a desk served by node
B, and an agent's duty changed on B must free or stop A's cards. The events are thin
(ids; readers take the rest from the shared store), so they travel as PostgreSQL
notifications: each node sends what its hub publishes on the floor's topics with
NOTIFY, and LISTENs for the others', which its hub delivers to its own subscribers (the
dashboard feed, the queues' watchers). No broker beyond the database every node already
needs.

Who wins a card is not decided here: Accept is one conditional UPDATE in that same
database (handoff.store.handoffs_repo), so two agents on two nodes cannot both win.

A notification is delivered only to connections listening at the time: events another
node sent while this one was disconnected are lost. On reconnecting, the hub's
subscribers are told so (EventHub.lost) and the dashboard feed rebuilds its board from
the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from typing import Any

from sqlalchemy.engine import make_url

from handoff.events import (
    AGENTS_TOPIC,
    CALLS_TOPIC,
    CARDS_TOPIC,
    NODES_TOPIC,
    TRANSCRIPTS_TOPIC,
    Event,
    EventHub,
)
from handoff.store import libpq_url
from pbx.event_link import LinkSettings, LinkSupervisor, cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "switchboard_floor"
# What the desks and boards of every node show, and what one node's controller asks of
# another's; an assistant's own topic stays on the node whose AI engine holds the call.
SHARED_TOPICS = frozenset({CARDS_TOPIC, AGENTS_TOPIC, CALLS_TOPIC, TRANSCRIPTS_TOPIC,
                           NODES_TOPIC})
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
PAYLOAD_LIMIT = 7900
# A transcript line too long for one notification is cut to this many characters: at
# most 12 bytes each once escaped, well inside the limit.
SHORT_LINE = 600
LINK = LinkSettings(backoff_initial=0.2, backoff_max=5.0)


def channel_for(database_url: str) -> str:
    """The channel of the installation on ``database_url``. Notifications go to the
    whole database, whatever the schema: two installations kept in two schemas of one
    database (``options=-csearch_path=…``) each get a channel of their own."""
    options = str(make_url(database_url).query.get("options", ""))
    found = re.search(r"search_path=([A-Za-z0-9_]+)", options)
    return f"{CHANNEL}_{found[1].lower()}" if found else CHANNEL


class SharedEvents:
    """Relays ``hub``'s floor events to the other nodes on ``database_url`` and delivers
    theirs to ``hub``, for as long as :meth:`run` runs."""

    def __init__(self, hub: EventHub, database_url: str, *, node: str = "",
                 queue: int = 4096) -> None:
        self._hub = hub
        self._url = libpq_url(database_url)
        self.channel = channel_for(database_url)
        # Each node hears its own notifications too; it skips those with its name.
        self.node = node or secrets.token_hex(6)
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=queue)
        self._unsent: str | None = None
        self.link = LinkSupervisor("shared events (PostgreSQL LISTEN/NOTIFY)", LINK, log)
        self.sent = self.received = self.dropped = 0
        self._was_up = False

    def _relay(self, topic: str, payload: Event) -> None:
        if topic not in SHARED_TOPICS:
            return
        text = self._encode(topic, payload)
        if len(text) > PAYLOAD_LIMIT and isinstance(payload.get("text"), str):
            # Only a transcript line can be this long: the other nodes' boards show its
            # beginning (the whole line is in the store, for the call's panel).
            text = self._encode(topic, {**payload, "text": payload["text"][:SHORT_LINE] + "…"})
        if len(text) > PAYLOAD_LIMIT:
            log.warning("call=%s: %s event too long to share (%d bytes)",
                        payload.get("call_id"), payload.get("type"), len(text))
            self.dropped += 1
            return
        if self._outbox.full():
            # The database is out of reach for long: the oldest news is the least useful.
            self._outbox.get_nowait()
            self.dropped += 1
        self._outbox.put_nowait(text)

    def _encode(self, topic: str, payload: Event) -> str:
        # ASCII only (non-ASCII escaped): its length is its size in bytes.
        return json.dumps({"node": self.node, "topic": topic, "event": payload},
                          separators=(",", ":"))

    async def run(self, ready: asyncio.Event | None = None) -> None:
        self._hub.relay_to(self._relay)
        try:
            while True:
                try:
                    await self._session(ready)
                    reason = "the connection ended"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # psycopg's errors, OSError: any is a lost link
                    reason = f"{type(exc).__name__}: {exc}"
                self.link.down(reason)
                await self.link.backoff()
        finally:
            self._hub.relay_to(None)
            self.link.close()

    async def _session(self, ready: asyncio.Event | None) -> None:
        # The postgres extra: only a PostgreSQL store needs it (SQLite is one box).
        import psycopg  # noqa: PLC0415

        # Named, so that pg_stat_activity tells which node's link a connection is.
        name = f"switchboard {self.node}"
        async with (
            await psycopg.AsyncConnection.connect(self._url, autocommit=True,
                                                  application_name=name) as listener,
            await psycopg.AsyncConnection.connect(self._url, autocommit=True,
                                                  application_name=name) as sender,
        ):
            await listener.execute(f"LISTEN {self.channel}")
            self.link.up()
            if self._was_up:
                # Listening again: what the others sent meanwhile never reached us.
                self._hub.lost(SHARED_TOPICS)
            self._was_up = True
            if ready is not None:
                ready.set()
            tasks = [asyncio.create_task(self._listen(listener), name="shared events in"),
                     asyncio.create_task(self._send(sender), name="shared events out")]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(tasks)
            for task in done:
                task.result()  # re-raises why the link ended

    async def _listen(self, connection: Any) -> None:
        async for note in connection.notifies():
            try:
                message = json.loads(note.payload)
                if message["node"] == self.node:
                    continue
                self.received += 1
                self._hub.deliver(str(message["topic"]), dict(message["event"]))
            except (ValueError, KeyError, TypeError):
                log.warning("shared events: not one of ours on %s: %.200s", self.channel,
                            note.payload)

    async def _send(self, connection: Any) -> None:
        while True:
            if self._unsent is None:
                self._unsent = await self._outbox.get()
            await connection.execute("SELECT pg_notify(%s, %s)", (self.channel, self._unsent))
            # Kept until sent: a link lost mid-send sends it first on the next one.
            self._unsent = None
            self.sent += 1
