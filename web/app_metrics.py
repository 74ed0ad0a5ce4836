"""The process's own figures on /metrics, next to the call figures of
:mod:`handoff.metrics`: whether the PBX is reachable right now, the calls in progress,
how the ARI and AMI event links are doing, and the usual process metrics (memory, CPU,
open files) an operator's Prometheus expects from any service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pbx.event_link import EventStats, Status

# Telephony states in which a PBX exists to talk to (web.telephony.Telephony.status).
PBX_RUNNING = ("ok", "external")


class EventLink(Protocol):
    """What an ARI or AMI client shows of its link (pbx.event_link.SupervisedClient)."""

    @property
    def status(self) -> Status: ...

    stats: EventStats


def asterisk_up(telephony_status: str, ari: EventLink | None) -> float:
    """1 while the PBX answers: it was started (or found) and its ARI event link is up
    right now. A PBX that died, or one the controller cannot reach, is 0 at once: the
    ARI link's ping goes unanswered within seconds and the link turns ``degraded``."""
    if telephony_status not in PBX_RUNNING or ari is None:
        return 0.0
    return 1.0 if ari.status == "connected" else 0.0


class EventLinkCollector(Collector):
    """The event links' counters (pbx.event_link.EventStats), read at scrape time."""

    def __init__(self, links: Callable[[], dict[str, EventLink | None]]) -> None:
        self._links = links

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        connected = GaugeMetricFamily(
            "switchboard_event_link_connected",
            "1 while the link to Asterisk (ari, ami) delivers events", labels=["link"])
        counters = {
            field: CounterMetricFamily(
                f"switchboard_event_link_{field}", help_text, labels=["link"])
            for field, help_text in (
                ("delivered", "events handed to their handlers"),
                ("errors", "handler failures (each one is logged)"),
                ("bad_frames", "frames that were not an event, or had lines that were not "
                               "headers (AMI); each is logged"),
                ("unknown_events", "events of a type ARI does not define, passed on"),
                ("connects", "connections made, the first included: more is reconnects"),
            )
        }
        # By event type: which of a call's events were late tells where to look (a slow
        # StasisStart is the call's set-up, a slow StasisEnd its wrap-up and recording).
        delayed = CounterMetricFamily(
            "switchboard_event_handling_delayed",
            "events that waited for their turn, or whose handlers ran, longer than the "
            "handler budget (each one is logged with its call)", labels=["link", "event"])
        for name, link in self._links().items():
            if link is None:
                continue
            connected.add_metric([name], 1.0 if link.status == "connected" else 0.0)
            for field, family in counters.items():
                family.add_metric([name], float(getattr(link.stats, field)))
            for event, count in sorted(link.stats.delayed.items()):
                delayed.add_metric([name, event], float(count))
        yield connected
        yield from counters.values()
        yield delayed


def register_process_metrics(
    registry: CollectorRegistry, *, telephony_status: Callable[[], str],
    ari: Callable[[], EventLink | None], ami: Callable[[], EventLink | None],
    calls_live: Callable[[], int],
) -> None:
    up = Gauge("switchboard_asterisk_up", "1 while the PBX answers its ARI link",
               registry=registry)
    up.set_function(lambda: asterisk_up(telephony_status(), ari()))
    live = Gauge("switchboard_calls_live", "calls in progress", registry=registry)
    live.set_function(lambda: float(calls_live()))
    registry.register(EventLinkCollector(lambda: {"ari": ari(), "ami": ami()}))
    # The collectors prometheus_client registers in its global registry, on ours: the
    # process's memory, CPU seconds, open files, Python version and GC.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

