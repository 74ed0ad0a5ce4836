"""What Asterisk's security events say about the box: counted for Prometheus, logged for
the admin, without letting a SIP scanner flood the log.

An on-prem PBX with a SIP trunk port open is scanned within hours of going live: tens of
thousands of REGISTER and INVITE guesses a day, each one an AMI security event
(``InvalidAccountID``, ``ChallengeResponseFailed``, ``InvalidPassword``, ``FailedACL``, ...).
Every event is counted (by event and service: SIP, AMI); the log gets one line the first
time a remote address misbehaves and then at most one summary line per address per
``log_every_s``, so the log stays readable while a scan goes on. The summaries are
written by :meth:`SecurityEvents.run` when they fall due, not when the next refusal
happens to arrive: a burst that stops must still show in the log within the period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

# Events that say something was refused, as opposed to the informational ones
# (SuccessfulAuth, ChallengeSent) that every legitimate REGISTER also produces.
REFUSALS = frozenset({
    "FailedACL", "InvalidAccountID", "SessionLimit", "MemoryLimit", "LoadAverageLimit",
    "RequestNotAllowed", "AuthMethodNotAllowed", "RequestBadFormat", "UnexpectedAddress",
    "ChallengeResponseFailed", "InvalidPassword", "InvalidTransport",
})


@dataclass
class _Offender:
    first_logged: float
    last_logged: float
    unlogged: int = 0
    latest: str = ""  # "service event" of the latest refusal not logged yet


class SecurityEvents:
    """Feed it AMI security events (``AmiClient.on_security(watch.observe)``) and run
    :meth:`run` alongside, for the summaries."""

    def __init__(
        self, registry: CollectorRegistry, *, log_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep, max_tracked: int = 10_000,
    ) -> None:
        self.refused = Counter(
            "switchboard_pbx_security_refusals",
            "requests the PBX refused for a security reason (AMI security events)",
            ["event", "service"], registry=registry)
        self._log_every_s = log_every_s
        self._clock = clock
        self._sleep = sleep
        self._max_tracked = max_tracked
        self._offenders: dict[str, _Offender] = {}
        self._unlogged = asyncio.Event()  # set when a refusal awaits its summary

    async def observe(self, event: Mapping[str, str]) -> None:
        name = str(event.get("Event", ""))
        if name not in REFUSALS:
            return
        service = str(event.get("Service", "?"))
        self.refused.labels(event=name, service=service).inc()
        remote = remote_host(str(event.get("RemoteAddress", "")))
        seen = self._offenders.get(remote)
        if seen is None:
            if len(self._offenders) >= self._max_tracked:
                # A scan from many addresses: forget the quietest, keep memory bounded.
                oldest = min(self._offenders, key=lambda k: self._offenders[k].last_logged)
                del self._offenders[oldest]
            now = self._clock()
            self._offenders[remote] = _Offender(first_logged=now, last_logged=now)
            log.warning("PBX refused %s %s from %s (account %r)", service, name, remote,
                        event.get("AccountID", ""))
            return
        seen.unlogged += 1
        seen.latest = f"{service} {name}"
        self._unlogged.set()

    async def run(self) -> None:
        """Write each address's summary as it falls due (``log_every_s`` after its last
        line), until cancelled; runs for as long as the AMI watch does."""
        while True:
            due = self._next_due()
            if due is None:
                self._unlogged.clear()
                await self._unlogged.wait()
                continue
            wait = due - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self.write_due_summaries()

    def write_due_summaries(self) -> None:
        now = self._clock()
        for remote, seen in self._offenders.items():
            # The same sum as _next_due, so what falls due is written (no spinning on a
            # rounding difference).
            if seen.unlogged and now >= seen.last_logged + self._log_every_s:
                log.warning("PBX refused %d more requests from %s in the last %.0f s "
                            "(latest: %s)", seen.unlogged, remote, now - seen.last_logged,
                            seen.latest)
                seen.last_logged, seen.unlogged = now, 0

    def _next_due(self) -> float | None:
        dues = [seen.last_logged + self._log_every_s
                for seen in self._offenders.values() if seen.unlogged]
        return min(dues, default=None)


def remote_host(address: str) -> str:
    """``IPV4/UDP/203.0.113.9/5060`` -> ``203.0.113.9`` (the port changes per attempt)."""
    parts = address.split("/")
    return parts[2] if len(parts) >= 3 else (address or "?")
