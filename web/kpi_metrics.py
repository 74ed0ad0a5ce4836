"""Today's key figures on /metrics, per assistant and per queue: the KPI page's figures
(KpisRepo.figures, the one function both use) over the site's day so far, so a
Prometheus alert on containment or service level sees what the supervisor's page says.

A scrape cannot wait on the database inside prometheus_client's collect(), so the
/metrics handler awaits ``refresh`` first and the collector reports what it found.
/metrics is open to anyone who can reach it (a load balancer, Prometheus), so the
figures are read at most every REFRESH_EVERY_S, however often it is asked, and scrapes
at the same moment share one read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from handoff.kpis import KpiFilter, Kpis
from handoff.store import Store
from handoff.store.transitions import utc_now
from web.dashboard.words import Site

log = logging.getLogger(__name__)

# Under Prometheus' usual 15 s scrape: every scrape still gets figures this fresh.
REFRESH_EVERY_S = 10.0


class KpiMetrics(Collector):
    def __init__(self, store: Store, site: Site, now: Callable[[], datetime] = utc_now, *,
                 every_s: float = REFRESH_EVERY_S) -> None:
        self._store = store
        self._site = site
        self._now = now
        self._every_s = every_s
        self._lock = asyncio.Lock()
        self._read_at: float | None = None
        self._overall: Kpis | None = None
        self._assistants: dict[str, Kpis] = {}

    async def refresh(self) -> None:
        """Read today's figures; on a database error the last ones stay (and it is
        logged): the rest of /metrics is still worth serving."""
        async with self._lock:
            fresh = self._read_at is not None and (
                time.monotonic() - self._read_at < self._every_s)
            if not fresh:
                await self._read()

    async def _read(self) -> None:
        today = self._site.local(self._now()).date()
        since = self._site.day_start(today)
        until = self._site.day_start(today + timedelta(days=1))
        zone = self._site.zone
        try:
            async with self._store.transaction() as tx:
                overall = await tx.kpis.figures(KpiFilter(since, until), zone)
                assistants = {
                    assistant.name: await tx.kpis.figures(
                        KpiFilter(since, until, assistant_id=assistant.id), zone)
                    for assistant in await tx.assistants.listed()}
        except Exception:
            log.exception("today's key figures could not be read for /metrics")
            return
        self._overall, self._assistants = overall, assistants
        self._read_at = time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str, help_text: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"switchboard_kpi_today_{name}",
                                     f"{help_text}, since the site's midnight",
                                     labels=list(labels))

        calls = family("calls", "inbound calls ended", "assistant")
        contained = family("contained_calls", "calls the AI resolved alone", "assistant")
        containment = family("containment_ratio", "share of the calls the AI resolved alone",
                             "assistant")
        requests = family("handoff_requests", "requests for a person", "assistant")
        abandoned = family("abandoned", "callers who hung up waiting for a person",
                           "assistant")
        accept = family("time_to_accept_seconds",
                        "time from the card offered to an agent taking it (nearest rank)",
                        "assistant", "quantile")
        service = family("service_level_ratio",
                         "share of the queue's cards taken within its threshold", "queue")
        for name, kpis in sorted(self._assistants.items()):
            calls.add_metric([name], kpis.calls)
            contained.add_metric([name], kpis.contained)
            requests.add_metric([name], kpis.requests)
            abandoned.add_metric([name], kpis.abandoned)
            # A ratio or a wait with nothing to count is no sample, not a zero.
            if kpis.containment is not None:
                containment.add_metric([name], kpis.containment)
            for quantile, value in (("0.5", kpis.accept_p50_s), ("0.9", kpis.accept_p90_s)):
                if value is not None:
                    accept.add_metric([name, quantile], value)
        for queue in self._overall.queues if self._overall else ():
            if queue.service_level is not None:
                service.add_metric([queue.name], queue.service_level)
        yield from (calls, contained, containment, requests, abandoned, accept, service)
