"""The PBX's security events: every refusal counted, the log kept readable under a scan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from pbx.security_events import SecurityEvents, remote_host


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(remote: str, event: str = "InvalidAccountID", service: str = "PJSIP"
            ) -> dict[str, str]:
    return {"Event": event, "Service": service, "AccountID": "100",
            "RemoteAddress": f"IPV4/UDP/{remote}/5060"}


def counted(registry: CollectorRegistry, event: str, service: str) -> float:
    value = registry.get_sample_value("switchboard_pbx_security_refusals_total",
                                      {"event": event, "service": service})
    return value or 0.0


async def test_every_refusal_is_counted_and_informational_events_are_not() -> None:
    registry = CollectorRegistry()
    watch = SecurityEvents(registry)
    for _ in range(3):
        await watch.observe(refusal("203.0.113.9"))
    await watch.observe(refusal("203.0.113.9", "InvalidPassword", "AMI"))
    await watch.observe({"Event": "SuccessfulAuth", "Service": "PJSIP",
                         "RemoteAddress": "IPV4/UDP/127.0.0.1/5062"})
    await watch.observe({"Event": "ChallengeSent", "Service": "PJSIP"})
    assert counted(registry, "InvalidAccountID", "PJSIP") == 3
    assert counted(registry, "InvalidPassword", "AMI") == 1
    assert counted(registry, "SuccessfulAuth", "PJSIP") == 0


@contextlib.asynccontextmanager
async def summarising(clock: Clock) -> AsyncIterator[SecurityEvents]:
    """A watch whose summaries run on `clock`: its sleeps move the clock on at once."""
    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await asyncio.sleep(0)

    watch = SecurityEvents(CollectorRegistry(), log_every_s=60, clock=clock, sleep=sleep)
    summaries = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        summaries.cancel()
        await asyncio.gather(summaries, return_exceptions=True)


async def lines_logged(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    for _ in range(100):  # the summary task's turns; no wall-clock time passes
        if len(caplog.records) >= count:
            break
        await asyncio.sleep(0)
    return [r.getMessage() for r in caplog.records]


async def test_a_scan_logs_one_line_then_one_summary_per_address_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    with caplog.at_level(logging.WARNING, logger="pbx.security_events"):
        async with summarising(clock) as watch:
            for _ in range(500):
                await watch.observe(refusal("203.0.113.9"))
                clock.now += 0.05  # 25 s of scanning
            await watch.observe(refusal("198.51.100.7"))
            lines = await lines_logged(caplog, 3)
    assert len(lines) == 3
    assert "203.0.113.9" in lines[0] and "InvalidAccountID" in lines[0]
    assert "198.51.100.7" in lines[1]
    assert lines[2].startswith("PBX refused 499 more requests from 203.0.113.9 in the last 60 s")


async def test_a_burst_that_stops_is_summarised_within_the_minute_without_another_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 775 refusals in a burst, then silence: the summary used to wait for the next
    # refusal (it came 9 minutes later). It is written when its minute is up.
    clock = Clock()
    first = clock.now
    with caplog.at_level(logging.WARNING, logger="pbx.security_events"):
        async with summarising(clock) as watch:
            for _ in range(775):
                await watch.observe(refusal("203.0.113.9", "ChallengeResponseFailed"))
                clock.now += 0.01
            lines = await lines_logged(caplog, 2)
            summarised_at = clock.now
    assert len(lines) == 2
    assert lines[1].startswith("PBX refused 774 more requests from 203.0.113.9")
    assert "latest: PJSIP ChallengeResponseFailed" in lines[1]
    assert summarised_at - first <= 60


async def test_nothing_is_summarised_for_an_address_that_said_nothing_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    with caplog.at_level(logging.WARNING, logger="pbx.security_events"):
        async with summarising(clock) as watch:
            await watch.observe(refusal("203.0.113.9"))
            lines = await lines_logged(caplog, 2)
            assert clock.now == 1000.0  # the task waits for a refusal, not for time
    assert len(lines) == 1


async def test_a_scan_from_many_addresses_keeps_memory_bounded() -> None:
    watch = SecurityEvents(CollectorRegistry(), max_tracked=100)
    for n in range(1000):
        await watch.observe(refusal(f"10.0.{n // 256}.{n % 256}"))
    assert len(watch._offenders) == 100


def test_the_remote_host_is_the_address_without_transport_or_port() -> None:
    assert remote_host("IPV4/UDP/203.0.113.9/5060") == "203.0.113.9"
    assert remote_host("IPV6/TCP/2001:db8::1/5061") == "2001:db8::1"
    assert remote_host("") == "?"
