"""Prometheus metrics counted from the domain's events and the ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from handoff.calls import CallOutcome
from handoff.events import CARDS_TOPIC, CallEnded, Caller, CallStarted, EventHub, assistant_topic
from handoff.metrics import SwitchboardMetrics
from tests.dashboard_fixtures import open_store
from tests.tools_fixtures import finished_call
from tests.waiting import until


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
        events.publish(assistant_topic("receptionist"), CallStarted("x", Caller("+1", "")))
        call_id = await finished_call(store, agent_id=agent.id)
        ai_call = await finished_call(store, outcome=CallOutcome.COMPLETED_BY_AI)
        for cid in (call_id, ai_call):
            events.publish(CARDS_TOPIC, CallEnded(cid))

        def value(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        # The metrics count events one at a time in the order published: once a call
        # started on another assistant after them is counted, all of them are.
        events.publish(assistant_topic("marker"), CallStarted("y", Caller("+2", "")))
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
