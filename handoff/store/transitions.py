"""Persisting lifecycle transitions: check with the state machine, write under a guard
(a row version, or the state itself), record `from -> event -> to`, all in one
transaction."""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate

from handoff.calls import CALL_LIFECYCLE
from handoff.handoffs import HANDOFF_LIFECYCLE
from handoff.states import StateMachine
from handoff.store.errors import ConcurrentUpdate, NotFound
from handoff.store.models import Transition

S = TypeVar("S", bound=enum.StrEnum)
E = TypeVar("E", bound=enum.StrEnum)
RowT = TypeVar("RowT")
G = TypeVar("G")

Clock = Callable[[], datetime]

log = logging.getLogger(__name__)

# The ledger's INSERT on the table itself (see write_ledger), and where a transaction's
# lines wait for it (its session's info).
_RECORD = insert(cast(Table, Transition.__table__))
_LEDGER = "switchboard.ledger"

# Two writers racing on one row (controller and web process: a call's event, an agent's
# click against their wrap-up) settle in one or two rounds; more than this means
# something is looping and must surface.
MAX_GUARD_RETRIES = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


async def apply_under_guard(
    machine: StateMachine[S, E],
    event: E,
    *,
    kind: str,
    key: object,
    read: Callable[[], Awaitable[tuple[S, G] | None]],
    write: Callable[[S, S, G], Awaitable[RowT | None]],
) -> tuple[S, S, G, RowT]:
    """Apply `event` to the row `key` of a lifecycle table: (from, to, guard, row).

    `read` returns (state, guard) or None when the row is missing; `write` performs
    `UPDATE ... WHERE id = key AND <guard still holds>` and returns the updated row, or
    None when another writer got there first (a version moved on, a presence changed).
    The event is then judged again against the state that writer left: a caller hanging
    up while the agent leg is answering is valid from `connecting` but may not be from
    whatever came next. Raises InvalidTransition (nothing written), NotFound, or
    ConcurrentUpdate when the row keeps changing under us.
    """
    for _ in range(MAX_GUARD_RETRIES):
        found = await read()
        if found is None:
            raise NotFound(kind, key)
        current, guard = found
        target = machine.next_state(current, event)
        row = await write(current, target, guard)
        if row is None:
            log.debug("%s %s changed since it was read: judging %s again", kind, key, event.value)
            continue
        return current, target, guard, row
    raise ConcurrentUpdate(kind, key)


async def transition_in_place(
    session: AsyncSession,
    machine: StateMachine[S, E],
    event: E,
    *,
    kind: str,
    key: object,
    seen: S | None,
    read: Callable[[], Awaitable[S | None]],
    write: Callable[[S, S], Awaitable[RowT | None]],
    call_of: Callable[[RowT], str],
    handoff_id: int | None,
    at: datetime,
) -> RowT:
    """Apply `event` to a row of a call's lifecycle with one conditional UPDATE, and
    record the transition against the call.

    `write(source, target)` performs ``UPDATE ... SET state = target WHERE id = key AND
    state = source RETURNING ...`` and returns the row, or None when it matched nothing.
    The source is known without asking the database when the event leaves one state only
    (most steps of a handoff), or is the state the caller `seen` in this transaction (the
    row may have moved on since: the guard says so). Only when neither tells, or the
    UPDATE matched nothing, is the row read (`read`: its state, None when it is missing)
    and the event judged against what it says, exactly as a read-first step would: every
    step of every handoff wrote after a read before, twice the statements for the same
    guarantee. Raises InvalidTransition (nothing written), NotFound, or ConcurrentUpdate
    when the row keeps changing under us.
    """
    sources = machine.sources_of(event)
    source: S | None = seen if seen in sources else None
    if len(sources) == 1:
        (source,) = sources
    for _ in range(MAX_GUARD_RETRIES):
        if source is None:
            source = await read()
            if source is None:
                raise NotFound(kind, key)
        target = machine.next_state(source, event)
        row = await write(source, target)
        if row is not None:
            record_transition(session, machine, source, event, target,
                              call_id=call_of(row), handoff_id=handoff_id, at=at)
            return row
        log.debug("%s %s is not %s: judging %s against what it is", kind, key,
                  source.value, event.value)
        source = None
    raise ConcurrentUpdate(kind, key)


async def update_row(session: AsyncSession, entity: type[RowT], key: object,
                     values: Mapping[str, object], source: object = None) -> RowT | None:
    """``UPDATE <entity> SET <values>, version = version + 1 WHERE id = key [AND state =
    source] RETURNING <entity>``: the row as it now is (in the session, as a fresh read
    would be), or None when none matched.

    The statement is built once per entity and set of columns written, its values bound
    at each call: built anew, SQLAlchemy worked out its cache key from the whole of it
    every time, for every step of every call on the controller's one event loop.
    """
    statement = _guarded_update(cast(type, entity), tuple(sorted(values)), source is not None)
    params = {f"new_{name}": value for name, value in values.items()}
    params["row_key"] = key
    if source is not None:
        params["from_state"] = source
    result = await session.scalars(statement, params,
                                   execution_options={"populate_existing": True})
    return result.one_or_none()


@functools.cache
def _guarded_update(entity: type[Any], columns: tuple[str, ...],
                    guarded: bool) -> ReturningUpdate[Any]:
    table = cast(Table, entity.__table__)
    where = [table.c.id == bindparam("row_key", type_=table.c.id.type)]
    if guarded:
        where.append(table.c.state == bindparam("from_state", type_=table.c.state.type))
    return (update(entity).where(*where)
            .values(version=table.c.version + 1,
                    **{name: bindparam(f"new_{name}", type_=table.c[name].type)
                       for name in columns})
            .returning(entity))


def record_transition(
    session: AsyncSession,
    machine: StateMachine[S, E],
    current: S,
    event: E,
    target: S,
    *,
    call_id: str,
    handoff_id: int | None,
    at: datetime,
) -> None:
    """Log the transition (the row is already written) and keep its ledger line for the
    end of the transaction (:func:`write_ledger`), which persists it with the row: the
    log and the state can never disagree."""
    ref = None if handoff_id is None else f"handoff={handoff_id}"
    machine.transition(current, event, call_id=call_id, ref=ref)
    session.info.setdefault(_LEDGER, []).append(
        {"call_id": call_id, "handoff_id": handoff_id, "machine": machine.name,
         "from_state": current.value, "event": event.value, "to_state": target.value,
         "at": at})


async def write_ledger(session: AsyncSession) -> None:
    """The ledger lines of the transaction's steps so far, in their order, as one INSERT
    (Store.transaction calls it before the commit; a read of the ledger first).

    Most of a handoff's transactions take two steps (the handoff's and the call's): one
    statement for both rather than one each, on the controller's one event loop. A plain
    INSERT, not the ORM's unit of work: nothing reads the rows back.
    """
    lines = session.info.pop(_LEDGER, None)
    if lines:
        await session.execute(_RECORD, lines)


# The lifecycles whose transitions the ledger records against a call, by machine name.
_RECORDED: dict[str, StateMachine[Any, Any]] = {
    machine.name: machine for machine in (CALL_LIFECYCLE, HANDOFF_LIFECYCLE)}


def history_errors(history: Iterable[Transition], *, finished: bool = True) -> list[str]:
    """Why a call's recorded transitions (``CallsRepo.history``: the call's and its
    handoffs', oldest first) are not each a valid path of its lifecycle; empty when they
    are. With ``finished`` the call and every handoff must have reached their end."""
    paths: dict[tuple[str, int | None], list[tuple[str, str, str]]] = {}
    for step in history:
        paths.setdefault((step.machine, step.handoff_id), []).append(
            (step.from_state, step.event, step.to_state))
    errors = []
    for (name, handoff_id), steps in paths.items():
        machine = _RECORDED.get(name)
        subject = name if handoff_id is None else f"{name} {handoff_id}"
        if machine is None:
            errors.append(f"{subject}: no lifecycle of that name")
            continue
        errors += [f"{subject}: {error}" for error in machine.path_errors(steps,
                                                                          finished=finished)]
    return errors
