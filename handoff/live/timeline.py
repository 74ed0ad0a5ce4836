"""Where an Accept's time goes: monotonic marks along its path, from the request reaching
the server to the ARI reply that put the agent's leg in the call bridge.

The caller waits for all of it (an open line's connect target is 30 ms p50, of which
the bridge's mixing tick alone can take 20), so each stage is stamped where it happens
and the whole is kept for the last few Accepts (`switchboard bench handoff --agent
browser` prints them per stage) and logged at debug level. The marks travel with the
request's context: the route starts a timeline, the call control adds to it without
being handed it through every signature, and a path that started none (the benchmark's
rig calling the controller directly) stamps nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar

log = logging.getLogger(__name__)

# The stages, in path order. received: the request read off the tab's socket (or the
# POST's handler reached); locked: the call's lock held; won: the conditional UPDATE
# said this agent won; ari_sent / ari_answered: the bridge move (an open line's
# addChannel, or a rung leg's dial) asked and done; committed: the ledger has it;
# replied: the tab's reply is on its way; ai_left: an open line's AI hung up, a mixing
# tick after the move, in the background (a rung phone's leaves later still, once its
# voice flows).
STAGES = ("received", "locked", "won", "ari_sent", "ari_answered", "committed", "replied",
          "ai_left")
KEPT = 64  # recent Accepts kept for a benchmark to read (a bounded record, not a log)

Marks = dict[str, float]
_current: ContextVar[Marks | None] = ContextVar("accept_marks", default=None)


class AcceptTimelines:
    """The last Accepts' marks by handoff id, on the time.monotonic() line."""

    def __init__(self) -> None:
        self._recent: deque[tuple[int, Marks]] = deque(maxlen=KEPT)

    @contextlib.contextmanager
    def timing(self, handoff_id: int) -> Iterator[Marks]:
        marks: Marks = {"received": time.monotonic()}
        token = _current.set(marks)
        try:
            yield marks
        finally:
            _current.reset(token)
            mark("replied")
            self._recent.append((handoff_id, marks))
            start = marks["received"]
            log.debug("accept handoff=%s: %s", handoff_id, ", ".join(
                f"{stage} +{(at - start) * 1000:.1f} ms" for stage, at in marks.items()))

    def of(self, handoff_id: int) -> Marks | None:
        return next((m for h, m in reversed(self._recent) if h == handoff_id), None)


def mark(stage: str) -> None:
    """Stamp `stage` on the Accept in progress in this context (the first stamp stays)."""
    marks = _current.get()
    if marks is not None:
        marks.setdefault(stage, time.monotonic())
