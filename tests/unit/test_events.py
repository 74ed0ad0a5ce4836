"""The events' wire form: what an AI engine, the dashboard feed and the metrics read.

Spelled out here literally, not through the constructors, so renaming a kind or a field
in handoff/events.py fails a test instead of silently changing the AI control API's
public events WebSocket (web/openapi/ai_control.json)."""

from __future__ import annotations

import pytest

from handoff.events import (
    AGENTS_TOPIC,
    CALLS_TOPIC,
    CARDS_TOPIC,
    TAKEN_OVER,
    AgentChanged,
    CallChanged,
    CallEnded,
    Caller,
    CallStarted,
    EventHub,
    EventType,
    Fallback,
    HandoffConnected,
    HandoffFailed,
    LegQualityRecorded,
    NodeAccepted,
    NodeReply,
    NodeRequest,
    Offered,
    Overflow,
    Ready,
    Resync,
    ReturnedToAi,
    Taken,
    TranscriptLine,
    TypedEvent,
    Withdrawn,
    assistant_of,
    assistant_topic,
    call_topic,
)
from handoff.handoffs import FailureReason

WIRE: list[tuple[TypedEvent, dict[str, object]]] = [
    (Offered("c1", 7), {"type": "offered", "call_id": "c1", "handoff_id": 7}),
    (Taken(7, 3), {"type": "taken", "handoff_id": 7, "agent_id": 3}),
    (Withdrawn(7, FailureReason.TIMEOUT),
     {"type": "withdrawn", "handoff_id": 7, "reason": "timeout"}),
    (Withdrawn(7, TAKEN_OVER), {"type": "withdrawn", "handoff_id": 7, "reason": "taken_over"}),
    (CallEnded("c1"), {"type": "call_ended", "call_id": "c1"}),
    (CallStarted("c1", Caller("+33123", "Jeanne"), "ai_only", ["billing"]),
     {"type": "call_started", "call_id": "c1", "caller": {"number": "+33123", "name": "Jeanne"},
      "handoff_level": "ai_only", "restricted_topics": ["billing"],
      "out_of_hours": False}),
    (HandoffConnected("c1", "3"), {"type": "handoff_connected", "call_id": "c1", "agent": "3"}),
    (HandoffFailed("c1", FailureReason.NO_AGENTS, Fallback.CALLBACK),
     {"type": "handoff_failed", "call_id": "c1", "reason": "no_agents", "fallback": "callback"}),
    (HandoffFailed("c1", FailureReason.TIMEOUT, Fallback.NUMBER),
     {"type": "handoff_failed", "call_id": "c1", "reason": "timeout", "fallback": "number"}),
    # An agent's leg that dropped: a new offer follows, so no fallback is named.
    (HandoffFailed("c1", FailureReason.AGENT_VANISHED),
     {"type": "handoff_failed", "call_id": "c1", "reason": "agent_vanished"}),
    (ReturnedToAi("c1"), {"type": "returned_to_ai", "call_id": "c1"}),
    (AgentChanged(3), {"type": "agent_changed", "agent_id": 3}),
    (CallChanged("c1"), {"type": "call_changed", "call_id": "c1"}),
    (TranscriptLine("c1", "caller", "[pressed 0]", "2025-03-01T09:00:00+00:00"),
     {"type": "transcript", "call_id": "c1", "speaker": "caller", "text": "[pressed 0]",
      "at": "2025-03-01T09:00:00+00:00"}),
    (LegQualityRecorded("c1", "caller", 1.4, 0.0, 5.2),
     {"type": "leg_quality", "call_id": "c1", "leg": "caller", "jitter_ms": 1.4,
      "loss_pct": 0.0, "rtt_ms": 5.2}),
    # A phone that sends no RTCP: no round trip, absent rather than null.
    (LegQualityRecorded("c1", "agent", 0.8, 0.5),
     {"type": "leg_quality", "call_id": "c1", "leg": "agent", "jitter_ms": 0.8,
      "loss_pct": 0.5}),
    (Ready("receptionist", ["c1", "c2"]),
     {"type": "ready", "assistant": "receptionist", "calls": ["c1", "c2"]}),
    (Overflow(44), {"type": "overflow", "dropped": 44}),
    (Resync(), {"type": "resync"}),
    # Between the nodes of a cluster only (handoff.live.xnode); no engine hears them.
    (NodeAccepted("node-a", 7, 3, "node-b"),
     {"type": "node_accepted", "node": "node-a", "handoff_id": 7, "agent_id": 3,
      "via": "node-b"}),
    (NodeRequest("node-a", "r1", "node-b", "return_to_ai", {"call_id": "c1"}),
     {"type": "node_request", "node": "node-a", "request_id": "r1", "sender": "node-b",
      "command": "return_to_ai", "args": {"call_id": "c1"}}),
    (NodeReply("node-b", "r1", 7), {"type": "node_reply", "node": "node-b",
                                    "request_id": "r1", "result": 7}),
    (NodeReply("node-b", "r2", refusal={"kind": "not_found", "args": ["call", "c1"]}),
     {"type": "node_reply", "node": "node-b", "request_id": "r2",
      "refusal": {"kind": "not_found", "args": ["call", "c1"]}}),
]


@pytest.mark.parametrize(("event", "wire"), WIRE, ids=[repr(e) for e, _ in WIRE])
def test_each_event_keeps_its_wire_form(event: TypedEvent, wire: dict[str, object]) -> None:
    out = event.to_dict()
    assert out == wire
    # Plain strings on the wire, not the enums a producer may hold: what json.dumps and
    # an engine's comparison see is the same either way, a log line's repr is not.
    assert all(type(v) is not FailureReason and type(v) is not Fallback for v in out.values())
    assert type(out["type"]) is str


def test_every_event_kind_has_its_constructor() -> None:
    assert {e.kind for e, _ in WIRE} == set(EventType)


def test_topics_are_spelled_as_subscribers_expect() -> None:
    assert (CARDS_TOPIC, AGENTS_TOPIC, CALLS_TOPIC) == ("cards", "agents", "calls")
    assert assistant_topic("sales") == "assistant:sales"
    assert call_topic("c1") == "call:c1"
    assert assistant_of(assistant_topic("front:desk")) == "front:desk"
    assert assistant_of(CARDS_TOPIC) is None
    assert assistant_of(call_topic("c1")) is None


async def test_a_subscriber_gets_the_wire_form_with_its_topic() -> None:
    hub = EventHub()
    async with hub.subscribe(assistant_topic("receptionist")) as mine, hub.subscribe("*") as every:
        hub.publish(CARDS_TOPIC, Offered("c1", 7))
        hub.publish(assistant_topic("receptionist"), CallEnded("c1"))
        assert await every.get() == {"topic": "cards", "type": "offered", "call_id": "c1",
                                     "handoff_id": 7}
        assert await every.get() == {"topic": "assistant:receptionist", "type": "call_ended",
                                     "call_id": "c1"}
        assert await mine.get() == {"topic": "assistant:receptionist", "type": "call_ended",
                                    "call_id": "c1"}
        assert mine.queue.empty()
