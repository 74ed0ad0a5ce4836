"""A small publish/subscribe hub: what happened to calls, for whoever listens.

AI engines (the control API's events WebSocket) and, later, dashboards subscribe to
topics. Each subscriber has its own bounded queue: a slow or stalled listener loses
its oldest events and is told so (``overflow``), it never delays the controller or the
other listeners.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Event = dict[str, Any]

# An agent's duty or presence changed (the dashboard's toggles, the controller's
# wrap-up): every process serving dashboards, and the metrics, hear of it.
AGENTS_TOPIC = "agents"
# Something an agent's call panel shows changed (a transcript line, a note, a
# transfer's state, the connection): the panels of that call reload it.
CALLS_TOPIC = "calls"


def agent_changed_event(agent_id: int) -> Event:
    return {"type": "agent_changed", "agent_id": agent_id}


def call_changed_event(call_id: str) -> Event:
    return {"type": "call_changed", "call_id": call_id}


# Compared by identity: the hub keeps subscriptions in a set, and two listeners of the
# same topics are still two listeners.
@dataclass(eq=False)
class Subscription:
    topics: frozenset[str]
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    dropped: int = 0

    def offer(self, event: Event) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def publish(self, topic: str, event: Event) -> None:
        for sub in self._subscriptions:
            if topic in sub.topics or "*" in sub.topics:
                sub.offer({"topic": topic, **event})

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        sub = Subscription(frozenset(topics))
        self._subscriptions.add(sub)
        try:
            yield sub
        finally:
            self._subscriptions.discard(sub)
