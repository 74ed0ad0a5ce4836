"""The call centre's key figures over a range of days: how much the AI resolved alone,
why people were asked for, how fast they took the calls, who hung up waiting, the
queues' service level, and each agent's handled calls, talk, wrap-up and pause time.

The figures are read from the store by handoff.store.kpis_repo (one function for the
KPI page, its CSV and /metrics); this module holds what they are and the arithmetic
that needs no database: percentiles and the spans of an agent's states.

What counts:
- calls: inbound calls started in the range that have ended (call-backs are the
  agents' own calls, not demand);
- contained: those the AI resolved without a person: ended by the AI, and no person
  was ever put through to the caller;
- requests: first attempts at a handoff (a re-offer after a failed leg is the same
  request), by reason;
- time to accept: from the card being offered to an agent taking it, per attempt
  (what /metrics' switchboard_handoff_time_to_accept_seconds measures);
- abandoned: attempts the caller hung up on before a person was with them;
- service level: per queue, the share of its cards over (taken or not) that were taken
  within its threshold (handoff.store.queues_repo.queue_stats, as the wallboard);
- per agent: attempts put through to them (handled), from the agent joining to the
  end of their part (talk), and their wrap-up and pause (away) time from
  agent_state_changes, cut at the range's ends.

The assistant filter narrows everything to that assistant's calls. The queue and agent
filters narrow the figures about people (requests, waits, abandoned, service level,
agents); calls and containment stay those of the assistant (or of every assistant).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from handoff.agents import AgentState

# The time-to-accept distribution's bars: upper bounds in seconds (the last is open).
ACCEPT_BUCKETS_S: tuple[int, ...] = (5, 10, 20, 30, 60)


@dataclass(frozen=True, slots=True)
class KpiFilter:
    since: datetime
    until: datetime
    assistant_id: int | None = None
    queue_id: int | None = None
    agent_id: int | None = None


@dataclass(frozen=True, slots=True)
class QueueFigures:
    queue_id: int
    name: str
    threshold_s: int
    answered: int
    within: int  # taken within the threshold
    not_answered: int  # the caller hung up, or the wait ran out

    @property
    def service_level(self) -> float | None:
        over = self.answered + self.not_answered
        return self.within / over if over else None


@dataclass(frozen=True, slots=True)
class AgentFigures:
    agent_id: int
    name: str
    handled: int
    talk_s: float
    wrap_up_s: float
    # Away time by the reason they chose ("" for none), in the admin's words.
    pauses_s: dict[str, float] = field(default_factory=dict)

    @property
    def pause_s(self) -> float:
        return sum(self.pauses_s.values())


@dataclass(frozen=True, slots=True)
class Kpis:
    where: KpiFilter
    calls: int
    contained: int
    requests: int
    reasons: list[tuple[str, int]]  # (reason code, requests), most frequent first
    accept_waits_s: list[float]  # every taken attempt's time to accept, sorted
    abandoned: int
    queues: list[QueueFigures]
    agents: list[AgentFigures]
    requests_per_hour: list[int]  # by the hour of the site's day they were made, 0-23

    @property
    def containment(self) -> float | None:
        return self.contained / self.calls if self.calls else None

    @property
    def accept_p50_s(self) -> float | None:
        return percentile(self.accept_waits_s, 50)

    @property
    def accept_p90_s(self) -> float | None:
        return percentile(self.accept_waits_s, 90)

    @property
    def abandoned_share(self) -> float | None:
        return self.abandoned / self.requests if self.requests else None

    @property
    def service_level(self) -> float | None:
        """Over every queue: their cards taken within their own thresholds."""
        over = sum(q.answered + q.not_answered for q in self.queues)
        return sum(q.within for q in self.queues) / over if over else None

    def accept_distribution(self) -> list[tuple[str, int]]:
        """The time-to-accept bars: ("≤ 5 s", n), ... ("> 60 s", n)."""
        counts = [0] * (len(ACCEPT_BUCKETS_S) + 1)
        for wait in self.accept_waits_s:
            counts[next((i for i, top in enumerate(ACCEPT_BUCKETS_S) if wait <= top),
                        len(ACCEPT_BUCKETS_S))] += 1
        labels = [f"≤ {top} s" for top in ACCEPT_BUCKETS_S] + [f"> {ACCEPT_BUCKETS_S[-1]} s"]
        return list(zip(labels, counts, strict=True))


def percentile(values: Sequence[float], p: int) -> float | None:
    """Nearest rank: the smallest value with at least p % of them at or below it (a
    wait someone really had, never an interpolation); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class StateChange:
    at: datetime
    state: AgentState
    pause_reason_id: int | None


def state_spans(changes: Iterable[StateChange], since: datetime,
                until: datetime) -> dict[tuple[AgentState, int | None], float]:
    """Seconds spent in each (state, pause reason) within [since, until), from one
    agent's changes in time order: each state lasts until the next change (the last
    until `until`). The change before `since`, if given, is the state at its start."""
    spent: dict[tuple[AgentState, int | None], float] = {}
    ordered = sorted(changes, key=lambda c: c.at)
    for change, after in zip(ordered, [*ordered[1:], None], strict=True):
        start = max(change.at, since)
        end = min(after.at if after is not None else until, until)
        if end > start:
            key = (change.state, change.pause_reason_id)
            spent[key] = spent.get(key, 0.0) + (end - start).total_seconds()
    return spent
