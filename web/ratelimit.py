"""Throttling of failed sign-ins (the dashboard) and wrong tokens (the AI API): a few
failures per login from one address, more per address, then 429.

Why two limits: people behind one office NAT or one reverse proxy share an address, so
one agent mistyping a password five times must not lock every colleague out (R23). A
login guessed from one address is blocked after a few tries (``failures``); an address
guessing many logins (a sweep) only after many more (``address_failures``), enough to
cover a floor of colleagues who each mistype once or twice.

Counted in this process's memory: a restart forgets the count, and several web
processes each count their own. That bounds guessing to a handful of tries per window
per process, which against argon2 hashes and real passwords is the point; a shared
store would only matter behind a large pool of workers.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class LoginThrottle:
    def __init__(
        self,
        *,
        failures: int = 5,
        address_failures: int = 50,
        window_s: float = 300.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.address_failures = address_failures
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        # Least recently failed first: when an address sweep fills the table, the
        # oldest keys are forgotten first, and memory stays bounded.
        self._failed: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until every key may try again, or None when none is blocked."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self._limit(key):
                wait = max(wait, times[0] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            times = self._recent(key, now)
            times.append(now)
            self._failed[key] = times
            self._failed.move_to_end(key)
        while len(self._failed) > self._max_keys:
            self._failed.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """A correct password clears that login's failures (not the address's: one
        address guessing many logins stays throttled)."""
        self._failed.pop(key, None)

    def _limit(self, key: str) -> int:
        return self.address_failures if key.startswith(ADDRESS_PREFIX) else self.failures

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failed.get(key)
        if times is None:
            return deque(maxlen=self._limit(key))
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times


ADDRESS_PREFIX = "address:"


def login_key(login: str, address: str | None) -> str:
    """One login tried from one address: a colleague at the same address, or the same
    person at home, counts apart."""
    return f"login:{login.strip().casefold()[:64]}@{address or 'unknown'}"


def address_key(address: str | None) -> str:
    return ADDRESS_PREFIX + (address or "unknown")
