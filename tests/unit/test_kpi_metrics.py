"""Today's key figures on /metrics: the scripted day's figures (tests/kpi_day.py), per
assistant and per queue, as the KPI page has them, read when Prometheus scrapes."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from handoff.store import Store
from tests.kpi_day import Day
from tests.unit.test_kpis import SITE, day
from web.kpi_metrics import KpiMetrics

__all__ = ["day"]

# 20:00 in Paris on the scripted day: "today" is that day so far.
EVENING = datetime(2026, 3, 10, 19, 0, tzinfo=UTC)


async def test_todays_figures_per_assistant_and_queue_are_those_of_the_page(
    store: Store, day: Day,
) -> None:
    registry = CollectorRegistry()
    kpis = KpiMetrics(store, SITE, now=lambda: EVENING)
    registry.register(kpis)
    await kpis.refresh()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"switchboard_kpi_today_{name}", labels)

    assert [value(name, assistant="sales") for name in (
        "calls", "contained_calls", "handoff_requests", "abandoned")] == [7, 4, 3, 1]
    assert value("containment_ratio", assistant="sales") == 4 / 7
    assert value("time_to_accept_seconds", assistant="sales", quantile="0.5") == 12
    assert [value(name, assistant="support") for name in (
        "calls", "contained_calls", "handoff_requests", "abandoned")] == [3, 0, 3, 0]
    assert value("time_to_accept_seconds", assistant="support", quantile="0.9") == 30
    assert value("service_level_ratio", queue="billing") == 0.75
    assert value("service_level_ratio", queue="general") == 1 / 3


async def test_a_quiet_day_has_counts_at_zero_and_no_ratio(store: Store, day: Day) -> None:
    registry = CollectorRegistry()
    kpis = KpiMetrics(store, SITE, now=lambda: datetime(2026, 3, 20, 12, tzinfo=UTC))
    registry.register(kpis)
    await kpis.refresh()
    assert registry.get_sample_value("switchboard_kpi_today_calls", {"assistant": "sales"}) == 0
    assert registry.get_sample_value("switchboard_kpi_today_containment_ratio",
                                     {"assistant": "sales"}) is None
    assert registry.get_sample_value("switchboard_kpi_today_service_level_ratio",
                                     {"queue": "billing"}) is None


async def test_scrapes_close_together_share_one_read_of_the_store(
    store: Store, day: Day,
) -> None:
    registry = CollectorRegistry()
    kpis = KpiMetrics(store, SITE, now=lambda: EVENING, every_s=3600)
    registry.register(kpis)
    await kpis.refresh()
    async with store.transaction() as tx:  # a new assistant: its figures wait
        await tx.assistants.create(name="late", numbers=["2300"], control_token_hash="z")
    await kpis.refresh()
    assert registry.get_sample_value("switchboard_kpi_today_calls", {"assistant": "late"}) \
        is None
    # Without the wait, the second read sees it.
    fresh = CollectorRegistry()
    again = KpiMetrics(store, SITE, now=lambda: EVENING, every_s=0)
    fresh.register(again)
    await again.refresh()
    async with store.transaction() as tx:
        await tx.assistants.create(name="later", numbers=["2400"], control_token_hash="w")
    await again.refresh()
    assert fresh.get_sample_value("switchboard_kpi_today_calls", {"assistant": "later"}) == 0
