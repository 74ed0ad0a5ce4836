"""The hub's side of sharing events between nodes (handoff.shared_events); the
PostgreSQL side is proved by tests/integration/test_shared_floor.py."""

from __future__ import annotations

import json

from handoff.events import (
    ALL_TOPICS,
    CARDS_TOPIC,
    TRANSCRIPTS_TOPIC,
    CallEnded,
    Event,
    EventHub,
    Offered,
    TranscriptLine,
    assistant_topic,
    publish_transcript_line,
)
from handoff.shared_events import CHANNEL, SHORT_LINE, SharedEvents, channel_for


async def test_what_a_node_publishes_is_relayed_and_what_it_hears_is_not_relayed_back() -> None:
    hub = EventHub()
    relayed: list[tuple[str, Event]] = []
    hub.relay_to(lambda topic, event: relayed.append((topic, event)))
    async with hub.subscribe(CARDS_TOPIC) as cards, hub.subscribe(ALL_TOPICS) as everything:
        hub.publish(CARDS_TOPIC, Offered("c1", 7))
        hub.deliver(CARDS_TOPIC, {"type": "offered", "call_id": "c2", "handoff_id": 8})
        assert relayed == [(CARDS_TOPIC, {"type": "offered", "call_id": "c1", "handoff_id": 7})]
        assert [(await cards.get())["handoff_id"] for _ in range(2)] == [7, 8]
        # The metrics (every topic) count this node's own events only.
        assert (await everything.get())["handoff_id"] == 7
        assert everything.queue.empty()


def test_only_the_floors_topics_leave_the_node() -> None:
    hub = EventHub()
    shared = SharedEvents(hub, "postgresql://u@127.0.0.1/db")
    hub.relay_to(shared._relay)
    hub.publish(assistant_topic("receptionist"), CallEnded("c1"))
    hub.publish(CARDS_TOPIC, CallEnded("c1"))
    assert shared._outbox.qsize() == 1


def test_each_schema_of_a_database_is_a_floor_of_its_own() -> None:
    assert channel_for("postgresql+psycopg://u:p@h/db") == CHANNEL
    assert channel_for("postgresql://u@h/db?options=-csearch_path%3DSite_B") == (
        f"{CHANNEL}_site_b")


async def test_a_lost_link_wakes_the_floors_subscribers_to_read_the_store_afresh() -> None:
    hub = EventHub()
    async with hub.subscribe(CARDS_TOPIC) as cards, hub.subscribe(ALL_TOPICS) as everything:
        hub.lost(frozenset({CARDS_TOPIC}))
        assert (cards.dropped, await cards.get()) == (1, {"topic": CARDS_TOPIC,
                                                          "type": "resync"})
        # The metrics lost nothing of their own node's.
        assert (everything.dropped, everything.queue.empty()) == (0, True)


def test_a_transcript_line_too_long_for_one_notification_is_shared_cut() -> None:
    hub = EventHub()
    shared = SharedEvents(hub, "postgresql://u@127.0.0.1/db")
    hub.relay_to(shared._relay)
    said = "é" * 5000  # 30 000 bytes once escaped
    publish_transcript_line(hub, TranscriptLine("c1", "caller", said, "2025-03-01T09:00:00"))
    line = json.loads(shared._outbox.get_nowait())
    assert line["event"]["text"] == said[:SHORT_LINE] + "…"
    assert line["topic"] == TRANSCRIPTS_TOPIC
