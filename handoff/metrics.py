"""Prometheus metrics from the domain's events.

Built from the composition root's CollectorRegistry; ``run`` listens on the EventHub
(the controller's cards and per-assistant topics, the dashboard's agents topic) for
as long as the app lives. Outcomes and handoff times are read from the ledger when a
call ends, so each call and each handoff is counted exactly once, with the figures the
history page shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Counter_
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from handoff.agents import AgentState, agent_state
from handoff.events import (
    AGENTS_TOPIC,
    ALL_TOPICS,
    CARDS_TOPIC,
    Event,
    EventHub,
    EventType,
    assistant_of,
)
from handoff.store import NotFound, Store

log = logging.getLogger(__name__)

# From the click to the agent's phone answering: well under a second when staged legs
# work, up to the ring timeout when the phone is slow to pick up.
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# A leg's jitter and round trip: a few ms on a LAN; past 30 ms of jitter and 300 ms of
# round trip people start talking over each other.
DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.3, 0.5, 1.0)
# Lost packets, as a fraction: under 1 % is not heard, over 5 % is.
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class SwitchboardMetrics:
    def __init__(
        self, registry: CollectorRegistry, events: EventHub, store: Store, *,
        websocket_clients: Callable[[], int] = lambda: 0,
    ) -> None:
        self._events = events
        self._store = store
        self.calls_started = Counter("switchboard_calls_started", "calls answered",
                                     ["assistant"], registry=registry)
        self.calls_ended = Counter("switchboard_calls_ended", "calls ended, by outcome",
                                   ["outcome"], registry=registry)
        self.handoffs = Counter("switchboard_handoffs", "handoff attempts ended, by outcome",
                                ["outcome"], registry=registry)
        self.time_to_accept = Histogram(
            "switchboard_handoff_time_to_accept_seconds",
            "from the card being offered to an agent accepting it",
            buckets=SECONDS_BUCKETS, registry=registry)
        self.time_to_connect = Histogram(
            "switchboard_handoff_time_to_connect_seconds",
            "from the accept to the agent's audio reaching Asterisk (to the AI leaving, "
            "when none came)",
            buckets=SECONDS_BUCKETS, registry=registry)
        self.legs = LegQualityMetrics(registry)
        self.agents_on_duty = Gauge("switchboard_agents_on_duty", "agents on duty",
                                    registry=registry)
        # The state the boards show (handoff.agents.agent_state): an agent talking to a
        # caller counts as on a call, not as the "available" their presence still says.
        self.agents = Gauge("switchboard_agents", "agents by state", ["state"],
                            registry=registry)
        # Agents away, by the reason they chose ("" for none, such as a lost phone),
        # and whether it is work off the phone: the floor's productive and unproductive
        # pauses.
        self.agents_paused = Gauge("switchboard_agents_paused", "agents away, by reason",
                                   ["reason", "productive"], registry=registry)
        clients = Gauge("switchboard_dashboard_websocket_clients",
                        "dashboard tabs connected", registry=registry)
        clients.set_function(lambda: float(websocket_clients()))

    async def run(self, ready: asyncio.Event | None = None) -> None:
        async with self._events.subscribe(ALL_TOPICS) as sub:
            await self._count_agents()
            if ready is not None:
                ready.set()
            while True:
                event = await sub.get()
                try:
                    await self.observe(event)
                except Exception:
                    # A metric is never worth stopping the loop for.
                    log.exception("metrics could not count %r", event)

    async def observe(self, event: Event) -> None:
        topic, kind = str(event.get("topic", "")), event.get("type")
        assistant = assistant_of(topic)
        if assistant is not None and kind == EventType.CALL_STARTED:
            self.calls_started.labels(assistant).inc()
        elif kind == EventType.LEG_QUALITY:
            self.legs.observe(event)
        elif topic == CARDS_TOPIC and kind == EventType.CALL_ENDED:
            await self._call_ended(str(event["call_id"]))
            await self._count_agents()
        elif topic in (AGENTS_TOPIC, CARDS_TOPIC):
            # A card taken, withdrawn or re-offered puts an agent on, or off, a call.
            await self._count_agents()

    async def _call_ended(self, call_id: str) -> None:
        async with self._store.transaction() as tx:
            try:
                call = await tx.calls.get(call_id)
            except NotFound:
                return
            handoffs = await tx.handoffs.for_call(call_id)
        self.calls_ended.labels(call.outcome.value if call.outcome else "unknown").inc()
        for handoff in handoffs:
            self.handoffs.labels(handoff.state.value).inc()
            if handoff.offered_at and handoff.accepted_at:
                self.time_to_accept.observe(
                    (handoff.accepted_at - handoff.offered_at).total_seconds())
            connected = handoff.media_at or handoff.connected_at
            if handoff.accepted_at and connected:
                self.time_to_connect.observe(
                    (connected - handoff.accepted_at).total_seconds())

    async def _count_agents(self) -> None:
        async with self._store.transaction() as tx:
            agents = [a for a in await tx.agents.all() if a.enabled]
            busy = await tx.agents.busy_agent_ids()
            reasons = await tx.pause_reasons.listed(include_removed=True)
        self.agents_on_duty.set(sum(1 for a in agents if a.on_duty))
        states = Counter_(agent_state(a.presence, a.id in busy) for a in agents)
        for state in AgentState:
            self.agents.labels(state.value).set(states[state])
        paused = Counter_(a.pause_reason_id for a in agents
                          if agent_state(a.presence, a.id in busy) is AgentState.AWAY)
        # Every reason offered shows, at 0 when nobody chose it; a removed one while
        # someone is still away for it.
        self.agents_paused.clear()
        self.agents_paused.labels("", "false").set(paused[None])
        for reason in reasons:
            if reason.removed_at is None or paused[reason.id]:
                self.agents_paused.labels(reason.name, str(reason.productive).lower()).set(
                    paused[reason.id])


class LegQualityMetrics:
    """Each caller's and agent's leg as Asterisk measured it when it ended
    (LegQualityRecorded), by leg; a leg whose far end sent no RTCP is counted apart
    rather than as a 0 ms round trip."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.jitter = Histogram(
            "switchboard_leg_jitter_seconds",
            "mean interarrival jitter of a leg's audio at Asterisk, per leg ended",
            ["leg"], buckets=DELAY_BUCKETS, registry=registry)
        self.loss = Histogram(
            "switchboard_leg_loss_ratio", "a leg's packets lost on their way to Asterisk",
            ["leg"], buckets=LOSS_BUCKETS, registry=registry)
        self.rtt = Histogram(
            "switchboard_leg_rtt_seconds",
            "mean round-trip time from the far end's RTCP reports, per leg ended",
            ["leg"], buckets=DELAY_BUCKETS, registry=registry)
        self.no_rtt = Counter(
            "switchboard_leg_rtt_absent",
            "legs ended without a round trip timed (their far end sent no RTCP)",
            ["leg"], registry=registry)

    def observe(self, event: Event) -> None:
        leg = str(event.get("leg", ""))
        if event.get("jitter_ms") is not None:
            self.jitter.labels(leg).observe(float(event["jitter_ms"]) / 1000)
        if event.get("loss_pct") is not None:
            self.loss.labels(leg).observe(float(event["loss_pct"]) / 100)
        if event.get("rtt_ms") is not None:
            self.rtt.labels(leg).observe(float(event["rtt_ms"]) / 1000)
        else:
            self.no_rtt.labels(leg).inc()
