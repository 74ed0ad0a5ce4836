"""Persisting lifecycle transitions: check with the state machine, write under a version
guard, record `from -> event -> to` in the transitions table, all in one transaction."""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from handoff.states import StateMachine
from handoff.store.errors import ConcurrentUpdate, NotFound
from handoff.store.models import Transition

S = TypeVar("S", bound=enum.StrEnum)
E = TypeVar("E", bound=enum.StrEnum)
RowT = TypeVar("RowT")

Clock = Callable[[], datetime]

log = logging.getLogger(__name__)

# Two writers racing on one call (controller and web process) settle in one or two
# rounds; more than this means something is looping and must surface.
MAX_VERSION_RETRIES = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


async def transition_with_version_guard(
    session: AsyncSession,
    machine: StateMachine[S, E],
    event: E,
    *,
    kind: str,
    key: object,
    read: Callable[[], Awaitable[tuple[S, int, str] | None]],
    write: Callable[[S, S, int], Awaitable[RowT | None]],
    handoff_id: int | None,
    at: datetime,
) -> RowT:
    """Apply `event` to the row `key` of a lifecycle table.

    `read` returns (state, version, call id) or None when the row is missing; `write`
    performs `UPDATE ... WHERE id = key AND version = <read version>` and returns the
    updated row, or None when another writer got there first. The event is then judged
    again against the state that writer left: a caller hanging up while the agent leg
    is answering is valid from `connecting` but may not be from whatever came next.
    """
    for _ in range(MAX_VERSION_RETRIES):
        found = await read()
        if found is None:
            raise NotFound(kind, key)
        current, version, call_id = found
        target = machine.next_state(current, event)
        row = await write(current, target, version)
        if row is None:
            log.debug("%s %s call=%s: version %d is stale, re-reading", kind, key, call_id, version)
            continue
        await record_transition(
            session, machine, current, event, target,
            call_id=call_id, handoff_id=handoff_id, at=at,
        )
        return row
    raise ConcurrentUpdate(kind, key)


async def record_transition(
    session: AsyncSession,
    machine: StateMachine[S, E],
    current: S,
    event: E,
    target: S,
    *,
    call_id: str,
    handoff_id: int | None,
    at: datetime,
    flush: bool = True,
) -> None:
    """Log the transition (the row is already written) and persist it in the same
    transaction, so the log and the state can never disagree.

    ``flush=False`` leaves the INSERT to the next flush or the commit: one database
    round trip less on a path someone is waiting on (an Accept click).
    """
    ref = None if handoff_id is None else f"handoff={handoff_id}"
    machine.transition(current, event, call_id=call_id, ref=ref)
    session.add(
        Transition(
            call_id=call_id,
            handoff_id=handoff_id,
            machine=machine.name,
            from_state=current.value,
            event=event.value,
            to_state=target.value,
            at=at,
        )
    )
    if flush:
        await session.flush()
