"""What happened to calls, for whoever listens: the topics, the events, and the hub.

The controller, supervision, the call-backs, the phone watch and the dashboard's own
writes publish here; the dashboard feed, the metrics and the AI control API's events
WebSocket listen. Every topic and every event kind is spelled once, below, so a
producer, a consumer and a test cannot disagree on a spelling.

An event is published typed (one frozen dataclass per kind) and delivered as its wire
form, the plain dict an AI engine receives as JSON (``{"type": "call_ended", "call_id":
...}``, plus the hub's ``topic``): that form is a public contract (README,
``web/openapi/ai_control.json``), so a field added here is added to the contract.

Each subscriber has its own bounded queue: a slow or stalled listener loses its oldest
events and is told so (``overflow``), it never delays the controller or the other
listeners.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

log = logging.getLogger(__name__)

# The wire form of an event, as subscribers receive it.
Event = dict[str, Any]

# ---- topics --------------------------------------------------------------------------------

# Cards on the agents' desks: a handoff offered, taken or withdrawn, a call over. The
# dashboards and the metrics listen.
CARDS_TOPIC = "cards"
# An agent's duty or presence changed (the dashboard's toggles, the controller's
# wrap-up, a desk phone gone): every process serving dashboards, and the metrics, hear
# of it.
AGENTS_TOPIC = "agents"
# Something an agent's call panel shows changed (a transcript line, a note, a
# transfer's state, the connection): the panels of that call reload it.
CALLS_TOPIC = "calls"
# Every line of every live call's transcript as it is said (TranscriptLine): the
# supervisor board shows the AI's conversations as they grow, so a supervisor can read
# one and take the call over from there. One topic for all calls, because the board
# watches them all; a call's own topic (call_topic) serves whoever follows one call.
TRANSCRIPTS_TOPIC = "transcripts"
# A leg's figures were recorded as it ended (LegQualityRecorded): the metrics listen.
QUALITY_TOPIC = "quality"
# One node of a cluster asks another (handoff.live.xnode): a card of a call the other
# node holds was accepted here, or a person here gave a command on such a call (and the
# other node's reply). Every node's controller listens for those addressed to it;
# nobody else does.
NODES_TOPIC = "nodes"
# Subscribing to it hears every topic (the metrics).
ALL_TOPICS = "*"

_ASSISTANT_PREFIX = "assistant:"
_CALL_PREFIX = "call:"


def assistant_topic(assistant: str) -> str:
    """What one assistant's AI engine hears on its events WebSocket: its calls starting,
    going to a person, coming back, failing to, ending."""
    return f"{_ASSISTANT_PREFIX}{assistant}"


def assistant_of(topic: str) -> str | None:
    """The assistant whose topic this is (None for any other topic)."""
    return topic.removeprefix(_ASSISTANT_PREFIX) if topic.startswith(_ASSISTANT_PREFIX) else None


def call_topic(call_id: str) -> str:
    """One call's transcript as it is said."""
    return f"{_CALL_PREFIX}{call_id}"


# ---- events --------------------------------------------------------------------------------


class EventType(enum.StrEnum):
    # On CARDS_TOPIC (CALL_ENDED also on the call's assistant topic).
    OFFERED = "offered"
    TAKEN = "taken"
    WITHDRAWN = "withdrawn"
    CALL_ENDED = "call_ended"
    # On the call's assistant topic.
    CALL_STARTED = "call_started"
    HANDOFF_CONNECTED = "handoff_connected"
    HANDOFF_FAILED = "handoff_failed"
    RETURNED_TO_AI = "returned_to_ai"
    # On AGENTS_TOPIC and CALLS_TOPIC.
    AGENT_CHANGED = "agent_changed"
    CALL_CHANGED = "call_changed"
    # On the call's own topic and on TRANSCRIPTS_TOPIC.
    TRANSCRIPT = "transcript"
    # On QUALITY_TOPIC.
    LEG_QUALITY = "leg_quality"
    # The AI events WebSocket's own messages; the hub never carries them.
    READY = "ready"
    OVERFLOW = "overflow"
    # On NODES_TOPIC.
    NODE_ACCEPTED = "node_accepted"
    NODE_REQUEST = "node_request"
    NODE_REPLY = "node_reply"
    # From the hub itself, on a shared topic: another node's events may have been missed
    # (EventHub.lost); subscribers read the store afresh.
    RESYNC = "resync"


class Fallback(enum.StrEnum):
    """What happens to a caller nobody took (handoff_failed's ``fallback``)."""
    NUMBER = "number"  # put through to the assistant's fallback number
    CALLBACK = "callback"  # the AI keeps the caller; a call-back request is noted
    # The AI leaves; the caller leaves a message, noted as a call-back request.
    VOICEMAIL = "voicemail"


@dataclass(frozen=True)
class TypedEvent:
    """One kind of event; ``to_dict`` gives its wire form."""

    kind: ClassVar[EventType]

    def to_dict(self) -> Event:
        # A field that defaults to None is optional on the wire: absent, never null.
        optional = {f.name for f in fields(self) if f.default is None}
        out: Event = {"type": self.kind.value}
        for name, value in asdict(self).items():
            if value is None and name in optional:
                continue
            # The wire carries plain strings, not the enums some producers hold.
            out[name] = value.value if isinstance(value, enum.Enum) else value
        return out


@dataclass(frozen=True)
class Offered(TypedEvent):
    """A card is on the desks (a new handoff, a re-offer, a transfer to a colleague).
    Thin on purpose: the dashboard reads the card itself from the store."""

    kind: ClassVar[EventType] = EventType.OFFERED
    call_id: str
    handoff_id: int


@dataclass(frozen=True)
class Taken(TypedEvent):
    """An agent accepted the card; their phone is being rung."""

    kind: ClassVar[EventType] = EventType.TAKEN
    handoff_id: int
    agent_id: int


@dataclass(frozen=True)
class Withdrawn(TypedEvent):
    """The card left the desks untaken: a FailureReason's value, or ``taken_over``."""

    kind: ClassVar[EventType] = EventType.WITHDRAWN
    handoff_id: int
    reason: str


@dataclass(frozen=True)
class NodeAccepted(TypedEvent):
    """An agent whose phone is on node ``via`` won the card of a call ``node`` holds:
    ``node`` calls ``via`` for the agent (handoff.live.xnode)."""

    kind: ClassVar[EventType] = EventType.NODE_ACCEPTED
    node: str
    handoff_id: int
    agent_id: int
    via: str


@dataclass(frozen=True)
class NodeRequest(TypedEvent):
    """A person on ``sender``'s desk or board gave a command (``command``, with its
    ``args``) that only ``node``'s controller can carry out: a call, or an open line, its
    Asterisk holds. ``node`` answers with a :class:`NodeReply` of the same
    ``request_id`` (handoff.live.node_requests)."""

    kind: ClassVar[EventType] = EventType.NODE_REQUEST
    node: str
    request_id: str
    sender: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeReply(TypedEvent):
    """What ``node``'s request came to on the node that carried it out: its ``result``,
    or the ``refusal`` it met there (the same refusal the asking desk answers with)."""

    kind: ClassVar[EventType] = EventType.NODE_REPLY
    node: str
    request_id: str
    result: Any = None
    refusal: dict[str, Any] | None = None


# A supervisor took the call over while its card was still on offer.
TAKEN_OVER = "taken_over"
# A queue's card left the member it was given to when their ring window passed (it is
# offered to the next member at once: an "offered" follows).
MOVED_ON = "moved_on"


@dataclass(frozen=True)
class CallEnded(TypedEvent):
    kind: ClassVar[EventType] = EventType.CALL_ENDED
    call_id: str


@dataclass(frozen=True)
class Caller:
    number: str
    name: str


@dataclass(frozen=True)
class CallStarted(TypedEvent):
    """Announced before the AI leg is asked for: an engine serves only the streams of
    calls it has heard of."""

    kind: ClassVar[EventType] = EventType.CALL_STARTED
    call_id: str
    caller: Caller
    # The assistant's handoff level (a HandoffLevel's value), so the engine's prompt can
    # follow what the server will enforce, and the names of its restricted topics, which
    # the engine reports as a handoff request's `topic`.
    handoff_level: str
    restricted_topics: list[str] = field(default_factory=list)
    # The call came outside the assistant's business hours: its fallback applies at once
    # (an outside number rings, or a call-back request is noted), so the engine can tell
    # the caller so rather than promise a person.
    out_of_hours: bool = False


@dataclass(frozen=True)
class HandoffConnected(TypedEvent):
    """A person talks to the caller; the AI leg has left the call bridge."""

    kind: ClassVar[EventType] = EventType.HANDOFF_CONNECTED
    call_id: str
    agent: str  # the agent's id, as a string on the wire


@dataclass(frozen=True)
class HandoffFailed(TypedEvent):
    kind: ClassVar[EventType] = EventType.HANDOFF_FAILED
    call_id: str
    reason: str  # a FailureReason's value
    # Only when the attempt is over (nobody took it); an agent's leg that dropped is
    # followed by a new offer and says nothing here.
    fallback: Fallback | None = None


@dataclass(frozen=True)
class ReturnedToAi(TypedEvent):
    """The person handed the caller back; the events WebSocket adds the transcript of
    the person's part."""

    kind: ClassVar[EventType] = EventType.RETURNED_TO_AI
    call_id: str


@dataclass(frozen=True)
class AgentChanged(TypedEvent):
    kind: ClassVar[EventType] = EventType.AGENT_CHANGED
    agent_id: int


@dataclass(frozen=True)
class CallChanged(TypedEvent):
    kind: ClassVar[EventType] = EventType.CALL_CHANGED
    call_id: str


@dataclass(frozen=True)
class TranscriptLine(TypedEvent):
    kind: ClassVar[EventType] = EventType.TRANSCRIPT
    call_id: str
    speaker: str
    text: str
    at: str  # ISO 8601


@dataclass(frozen=True)
class LegQualityRecorded(TypedEvent):
    """A caller's or agent's leg ended and Asterisk's figures for it were recorded
    (handoff.quality.LegQuality; a figure Asterisk could not measure is absent)."""

    kind: ClassVar[EventType] = EventType.LEG_QUALITY
    call_id: str
    leg: str  # "caller" or "agent"
    jitter_ms: float | None = None
    loss_pct: float | None = None
    rtt_ms: float | None = None


def publish_transcript_line(hub: EventHub, line: TranscriptLine) -> None:
    """A line was stored for a call: whoever follows that call, the supervisor board,
    and the panels of the agents on it (they reload what they show) hear of it."""
    hub.publish(call_topic(line.call_id), line)
    hub.publish(TRANSCRIPTS_TOPIC, line)
    hub.publish(CALLS_TOPIC, CallChanged(line.call_id))


@dataclass(frozen=True)
class Ready(TypedEvent):
    """The events WebSocket's first message: the assistant's calls live now."""

    kind: ClassVar[EventType] = EventType.READY
    assistant: str
    calls: list[str]


@dataclass(frozen=True)
class Overflow(TypedEvent):
    """The engine read too slowly and lost this many events so far."""

    kind: ClassVar[EventType] = EventType.OVERFLOW
    dropped: int


@dataclass(frozen=True)
class Resync(TypedEvent):
    """Events of this topic from other nodes may have been missed (EventHub.lost)."""

    kind: ClassVar[EventType] = EventType.RESYNC


# ---- the hub -------------------------------------------------------------------------------


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


# Where this process's events go besides its own subscribers: the other nodes of a
# cluster (handoff.shared_events), as (topic, wire form).
Relay = Callable[[str, Event], None]


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._relay: Relay | None = None

    def publish(self, topic: str, event: TypedEvent) -> None:
        payload: Event | None = None
        for sub in self._subscriptions:
            if topic in sub.topics or ALL_TOPICS in sub.topics:
                if payload is None:
                    payload = event.to_dict()
                sub.offer({"topic": topic, **payload})
        if self._relay is not None:
            self._relay(topic, payload if payload is not None else event.to_dict())

    def deliver(self, topic: str, payload: Event) -> None:
        """An event another node published (its wire form): to the subscribers of its
        topic here, never relayed on. Not to those of every topic (the metrics): each
        node counts what it did itself, so that the nodes' figures add up."""
        for sub in self._subscriptions:
            if topic in sub.topics:
                sub.offer({"topic": topic, **payload})

    def lost(self, topics: frozenset[str]) -> None:
        """Other nodes' events on ``topics`` may have been missed (the link to them was
        down): each subscriber of one of them counts it as a loss, as if its queue had
        overflowed, and is woken by a ``resync`` event to rebuild its picture from the
        store now rather than at its next event."""
        for sub in self._subscriptions:
            missed = sub.topics & topics
            if missed:
                sub.dropped += 1
                sub.offer({"topic": min(missed), **Resync().to_dict()})

    def relay_to(self, relay: Relay | None) -> None:
        """Send every event published here to ``relay`` too (None: stop)."""
        self._relay = relay

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        sub = Subscription(frozenset(topics))
        self._subscriptions.add(sub)
        try:
            yield sub
        finally:
            self._subscriptions.discard(sub)
