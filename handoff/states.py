"""The small state-machine mechanism behind every call and handoff lifecycle.

A machine is only a table: (state, event) -> next state. It holds no current state
itself, because the current state of a call lives in its database row (two controller
processes may act on the same call); the store reads it, asks the machine for the next
state, and writes it back under a version or state guard.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=enum.StrEnum)
E = TypeVar("E", bound=enum.StrEnum)

log = logging.getLogger(__name__)


class InvalidTransition(Exception):
    """An event arrived that the lifecycle does not allow in the current state.

    Raised rather than ignored: a handoff that is silently left in the wrong state is
    exactly how a caller ends up stranded in a bridge with nobody on the other side.
    """

    def __init__(self, machine: str, state: enum.StrEnum, event: enum.StrEnum) -> None:
        super().__init__(f"{machine}: no transition from {state.value!r} on {event.value!r}")
        self.machine = machine
        self.state = state
        self.event = event


class StateMachine(Generic[S, E]):
    """A named lifecycle: its initial state, its transition table, its terminal states."""

    def __init__(self, name: str, initial: S, table: Mapping[tuple[S, E], S]) -> None:
        self.name = name
        self.initial = initial
        self._table = dict(table)
        sources = {state for state, _ in self._table}
        targets = set(self._table.values()) | {initial}
        # A state that is reached but never left ends the lifecycle (ended, completed...).
        self.terminal: frozenset[S] = frozenset(targets - sources)
        # Each event's sources, the guard of every step's UPDATE: worked out once.
        by_event: dict[E, set[S]] = {}
        for state, event in self._table:
            by_event.setdefault(event, set()).add(state)
        self._sources = {event: frozenset(states) for event, states in by_event.items()}

    def next_state(self, current: S, event: E) -> S:
        """The state `event` leads to from `current`, without logging (a dry run)."""
        try:
            return self._table[(current, event)]
        except KeyError:
            raise InvalidTransition(self.name, current, event) from None

    def transition(self, current: S, event: E, *, call_id: str, ref: str | None = None) -> S:
        """Return the next state and log `from -> event -> to` against the call.

        `ref` names the object inside the call when it is not the call itself
        (a handoff id), so one grep on the call id shows the whole story of the call.
        """
        return self.transition_of(current, event, subject=f"call={call_id}{_ref_text(ref)}")

    def transition_of(self, current: S, event: E, *, subject: str) -> S:
        """Return the next state and log `from -> event -> to` against `subject`, for a
        lifecycle that belongs to no call (an agent's presence: ``agent=7``)."""
        try:
            target = self.next_state(current, event)
        except InvalidTransition:
            log.warning("%s %s: %s -> %s refused", self.name, subject, current.value, event.value)
            raise
        log.info(
            "%s %s: %s -> %s -> %s",
            self.name, subject, current.value, event.value, target.value,
        )
        return target

    def allows(self, current: S, event: E) -> bool:
        return (current, event) in self._table

    def events_from(self, current: S) -> frozenset[E]:
        return frozenset(event for state, event in self._table if state == current)

    def sources_of(self, event: E) -> frozenset[S]:
        """Every state in which `event` is allowed (the guard of a conditional UPDATE)."""
        return self._sources.get(event, frozenset())

    def is_terminal(self, state: S) -> bool:
        return state in self.terminal

    def path_errors(self, steps: Iterable[tuple[str, str, str]], *,
                    finished: bool = True) -> list[str]:
        """Why ``steps`` (``from, event, to`` as a log or the ledger has them, oldest
        first) are not a path of this lifecycle: each must leave the state the one before
        reached (the first, the initial state) by a transition of the table, and with
        ``finished`` the last must reach a terminal state. Empty when they are one: no
        step was lost, invented or applied out of order."""
        table = {(s.value, e.value): t.value for (s, e), t in self._table.items()}
        errors: list[str] = []
        state = self.initial.value
        for number, (source, event, target) in enumerate(steps, 1):
            if source != state:
                errors.append(f"step {number} leaves {source!r}, not {state!r}")
            allowed = table.get((source, event))
            if allowed is None:
                errors.append(f"step {number}: no transition from {source!r} on {event!r}")
            elif allowed != target:
                errors.append(f"step {number}: {source!r} on {event!r} leads to "
                              f"{allowed!r}, not {target!r}")
            state = target
        if finished and state not in {s.value for s in self.terminal}:
            errors.append(f"ends in {state!r}, not a terminal state")
        return errors


def from_each(sources: Iterable[S], event: E, target: S) -> dict[tuple[S, E], S]:
    """Rows of a table: `event` leads to `target` from every state of `sources`."""
    return {(state, event): target for state in sources}


def stays(states: Iterable[S], event: E) -> dict[tuple[S, E], S]:
    """Rows of a table: `event` is allowed in each of `states` and changes nothing."""
    return {(state, event): state for state in states}


def _ref_text(ref: str | None) -> str:
    return "" if ref is None else f" {ref}"
