"""Queues: which agents a card goes to, in what order, and for how long.

A queue has members (agents, each with a level 1-5 in the queue's work: the queue is the
skill) and a strategy. ``offer_all`` is the behaviour without queues, limited to the
members: every free member sees the card and the first Accept wins. The other three
assign: the card goes to ONE free member for the queue's ring window; when it passes
untaken the member has missed it (a no-answer) and the card goes to the next one. A
member who misses ``no_answer_limit`` offers in a row is set away.

The choice is a pure function of the candidates (:func:`choose`), so each strategy is
pinned by unit tests; the store (``handoff.store.queues_repo``) says who the candidates
are, and ``handoff.live.queues`` runs the offers on live calls.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


class Strategy(enum.StrEnum):
    # Every free member at once; the first Accept wins (app_queue's ringall).
    OFFER_ALL = "offer_all"
    # The next free member after the one offered last in this queue, in member order.
    ROUND_ROBIN = "round_robin"
    # The free member whose last call ended longest ago (never had one: first).
    LONGEST_IDLE = "longest_idle"
    # The free member with the highest level; among equals, the longest idle.
    SKILLS_WEIGHTED = "skills_weighted"

    @property
    def assigns(self) -> bool:
        """One member at a time, with a ring window (not a card for everyone)."""
        return self is not Strategy.OFFER_ALL


class OfferOutcome(enum.StrEnum):
    """How one offer of a queued card ended (a row of the queue_offers table)."""

    ACCEPTED = "accepted"
    # The ring window passed without an Accept: a no-answer against that member.
    NO_ANSWER = "no_answer"
    # The card left the queue otherwise: the caller hung up, the maximum wait passed
    # (the fallback applies), a supervisor took the call, the transfer was cancelled.
    WITHDRAWN = "withdrawn"


MIN_LEVEL, MAX_LEVEL = 1, 5
DEFAULT_LEVEL = 3
DEFAULT_RING_S = 15
DEFAULT_MAX_WAIT_S = 120
DEFAULT_SERVICE_LEVEL_S = 20
DEFAULT_NO_ANSWER_LIMIT = 3


@dataclass(frozen=True, slots=True)
class Candidate:
    """A member free to be offered a card now (on duty, available, not on a call, not
    holding another card of their own)."""

    agent_id: int
    position: int  # the member's place in the queue's list, from 0
    level: int
    # When their last call (a handoff they took) ended; None: none yet, idle the longest.
    idle_since: datetime | None
    # How many times this very card was already offered to them (and missed).
    tries: int = 0


def _idle_key(c: Candidate) -> tuple[bool, datetime | None, int]:
    # Never on a call sorts before any end time; then the oldest end; then list order.
    return (c.idle_since is not None, c.idle_since, c.position)


def choose(
    strategy: Strategy, candidates: Iterable[Candidate], *, members: int,
    last_position: int | None = None,
) -> Candidate | None:
    """The member an assigning strategy offers the card to next, or None.

    Whatever the strategy, a member who already missed this card comes after every
    member who has not (``tries``): a caller is not offered twice to the same desk while
    another one has not been tried. ``members`` is the size of the member list and
    ``last_position`` the place of the member this queue offered a card to last (round
    robin goes on after them).
    """
    pool = list(candidates)
    if not pool:
        return None
    if strategy is Strategy.ROUND_ROBIN:
        start = -1 if last_position is None else last_position
        size = max(members, 1 + max(c.position for c in pool))
        return min(pool, key=lambda c: (c.tries, (c.position - start - 1) % size))
    if strategy is Strategy.LONGEST_IDLE:
        return min(pool, key=lambda c: (c.tries, *_idle_key(c)))
    if strategy is Strategy.SKILLS_WEIGHTED:
        return min(pool, key=lambda c: (c.tries, -c.level, *_idle_key(c)))
    raise ValueError(f"{strategy.value} offers to every member; nobody is chosen")


def within_service_level(wait_s: float, threshold_s: int) -> bool:
    """Whether a card taken after `wait_s` counts as answered within the queue's
    service level (Wazo's quality of service: the share taken within the threshold)."""
    return wait_s <= threshold_s
