"""Prometheus metrics counted from the domain's events and the ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from handoff.calls import CallOutcome
from handoff.events import (
    CARDS_TOPIC,
    QUALITY_TOPIC,
    CallEnded,
    Caller,
    CallStarted,
    EventHub,
    LegQualityRecorded,
    assistant_topic,
)
from handoff.metrics import SwitchboardMetrics
from pbx.event_link import EventStats, Status
from tests.dashboard_fixtures import open_store
from tests.tools_fixtures import finished_call
from tests.waiting import until
from web.app_metrics import asterisk_up, register_process_metrics


async def test_calls_handoffs_and_times_are_counted_once_per_call(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    async with store.transaction() as tx:
        agent = await tx.agents.create(login="a", display_name="A", sip_user="a",
                                       sip_password="x")
        await tx.agents.set_duty(agent.id, True)
    registry, events = CollectorRegistry(), EventHub()
    metrics = SwitchboardMetrics(registry, events, store, websocket_clients=lambda: 7)
    ready = asyncio.Event()
    task = asyncio.create_task(metrics.run(ready))
    try:
        await ready.wait()
        events.publish(assistant_topic("receptionist"),
                       CallStarted("x", Caller("+1", ""), "balanced"))
        call_id = await finished_call(store, agent_id=agent.id)
        ai_call = await finished_call(store, outcome=CallOutcome.COMPLETED_BY_AI)
        for cid in (call_id, ai_call):
            events.publish(CARDS_TOPIC, CallEnded(cid))

        def value(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        # The metrics count events one at a time in the order published: once a call
        # started on another assistant after them is counted, all of them are.
        events.publish(assistant_topic("marker"), CallStarted("y", Caller("+2", ""), "balanced"))
        await until(lambda: value("switchboard_calls_started_total", assistant="marker"), 5)
        assert value("switchboard_calls_started_total", assistant="receptionist") == 1
        assert value("switchboard_calls_ended_total", outcome="completed_by_agent") == 1
        assert value("switchboard_calls_ended_total", outcome="completed_by_ai") == 1
        assert value("switchboard_handoffs_total", outcome="completed") == 1
        assert value("switchboard_handoff_time_to_accept_seconds_count") == 1
        assert value("switchboard_handoff_time_to_connect_seconds_count") == 1
        assert value("switchboard_agents_on_duty") == 1
        assert value("switchboard_dashboard_websocket_clients") == 7
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.engine.dispose()


async def test_each_legs_jitter_loss_and_round_trip_go_to_histograms_by_leg(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    registry, events = CollectorRegistry(), EventHub()
    ready = asyncio.Event()
    task = asyncio.create_task(SwitchboardMetrics(registry, events, store).run(ready))
    try:
        await ready.wait()
        events.publish(QUALITY_TOPIC, LegQualityRecorded("c", "caller", 1.5, 0.5, 5.0))
        # A desk phone without RTCP: jitter and loss, no round trip.
        events.publish(QUALITY_TOPIC, LegQualityRecorded("c", "agent", 0.8, 0.0, None))

        def value(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        await until(lambda: value("switchboard_leg_rtt_absent_total", leg="agent"), 5)
        assert value("switchboard_leg_jitter_seconds_sum", leg="caller") == 0.0015
        assert value("switchboard_leg_jitter_seconds_count", leg="agent") == 1
        assert value("switchboard_leg_loss_ratio_bucket", leg="caller", le="0.005") == 1
        assert value("switchboard_leg_loss_ratio_bucket", leg="caller", le="0.001") == 0
        assert value("switchboard_leg_rtt_seconds_sum", leg="caller") == 0.005
        assert value("switchboard_leg_rtt_seconds_count", leg="agent") == 0
        assert value("switchboard_leg_rtt_absent_total", leg="caller") == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.engine.dispose()


class Link:
    def __init__(self, status: Status) -> None:
        self.status = status
        self.stats = EventStats(delivered=5, errors=1, connects=2)


def test_asterisk_up_only_while_the_pbx_runs_and_its_ari_link_is_connected() -> None:
    assert asterisk_up("ok", Link("connected")) == 1
    assert asterisk_up("external", Link("connected")) == 1
    assert asterisk_up("ok", Link("degraded")) == 0  # Asterisk died or is unreachable
    assert asterisk_up("ok", None) == 0  # the controller is still starting
    assert asterisk_up("stopping", Link("connected")) == 0


def test_process_and_event_link_figures_are_on_the_registry() -> None:
    registry = CollectorRegistry()
    ari, ami = Link("connected"), Link("degraded")
    register_process_metrics(registry, telephony_status=lambda: "ok", ari=lambda: ari,
                             ami=lambda: ami, calls_live=lambda: 3)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("switchboard_asterisk_up") == 1
    assert value("switchboard_calls_live") == 3
    assert value("switchboard_event_link_connected", link="ari") == 1
    assert value("switchboard_event_link_connected", link="ami") == 0
    assert value("switchboard_event_link_delivered_total", link="ari") == 5
    assert value("switchboard_event_link_connects_total", link="ami") == 2
    # Delayed events by type: the family is served before any (the Grafana panel's
    # query finds it), each type once it has one.
    assert "# TYPE switchboard_event_handling_delayed_total counter" in (
        generate_latest(registry).decode())
    assert value("switchboard_event_handling_delayed_total", link="ari",
                 event="StasisStart") is None
    ari.stats.delayed["StasisStart"] += 2
    assert value("switchboard_event_handling_delayed_total", link="ari",
                 event="StasisStart") == 2
    assert (value("process_resident_memory_bytes") or 0) > 0
    ari.status = "degraded"
    assert value("switchboard_asterisk_up") == 0
