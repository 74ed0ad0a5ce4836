"""The PBX's security events: every refusal counted, the log kept readable under a scan."""

from __future__ import annotations

import logging

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


async def test_a_scan_logs_one_line_then_one_summary_per_address_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    watch = SecurityEvents(CollectorRegistry(), log_every_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="pbx.security_events"):
        for _ in range(500):
            await watch.observe(refusal("203.0.113.9"))
            clock.now += 0.05  # 25 s of scanning
        await watch.observe(refusal("198.51.100.7"))
        clock.now += 40
        await watch.observe(refusal("203.0.113.9"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "203.0.113.9" in lines[0] and "InvalidAccountID" in lines[0]
    assert "198.51.100.7" in lines[1]
    assert lines[2].startswith("PBX refused 500 more requests from 203.0.113.9")


async def test_a_scan_from_many_addresses_keeps_memory_bounded() -> None:
    watch = SecurityEvents(CollectorRegistry(), max_tracked=100)
    for n in range(1000):
        await watch.observe(refusal(f"10.0.{n // 256}.{n % 256}"))
    assert len(watch._offenders) == 100


def test_the_remote_host_is_the_address_without_transport_or_port() -> None:
    assert remote_host("IPV4/UDP/203.0.113.9/5060") == "203.0.113.9"
    assert remote_host("IPV6/TCP/2001:db8::1/5061") == "2001:db8::1"
    assert remote_host("") == "?"
