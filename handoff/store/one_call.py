"""A decisive statement someone is waiting on, sent to SQLite in one call to its driver.

aiosqlite runs every SQLite call on the connection's own thread, and SQLAlchemy's
adapter makes four such calls per statement (open a cursor, execute, fetch, close): four
hand-offs between the event loop and that thread, each a wake-up the kernel may put off
on a busy box, and each a turn of the event loop in which other work can run first. An
open line's Accept waits on its conditional UPDATE before the bridge move, and the caller
waits with it; so on SQLite that statement is compiled once, its values converted by the
column types as SQLAlchemy would, and sent as one call (the connection's transaction,
begun by SQLite's driver at the UPDATE, stays the session's: its later statements, the
commit or the rollback follow on the same connection). Other databases (PostgreSQL: one
network round trip per statement either way) run it through the session as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from sqlalchemy import inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ReturningUpdate

RowT = TypeVar("RowT")
Processor = Callable[[Any], Any] | None


class _Compiled:
    """The statement as SQLite's driver takes it, and the column types' conversions."""

    def __init__(self, statement: ReturningUpdate[Any], entity: type[Any],
                 dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.dialect = dialect
        self.binds: dict[str, Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()}
        # RETURNING lists the table's columns in order (the entity's whole row), each
        # given to the entity by its attribute's name.
        mapper = inspect(entity)
        table = mapper.local_table
        self.columns = [mapper.get_property_by_column(c).key for c in table.columns]
        self.results: list[Processor] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in table.columns]

    def arguments(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        # The expanded state renders IN lists (the busy agents' states) as plain markers.
        state = self.compiled.construct_expanded_state(dict(params))
        processors = {**self.binds, **state.processors}
        names = state.positiontup or ()
        values = [value if (p := processors.get(name)) is None else p(value)
                  for name, value in zip(names, state.positional_parameters, strict=True)]
        return state.statement, values

    def row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        return {key: value if p is None else p(value)
                for key, p, value in zip(self.columns, self.results, raw, strict=True)}


class OneCallUpdate(Generic[RowT]):
    """An ``UPDATE ... RETURNING`` of one entity's rows, at most one row matching."""

    def __init__(self, statement: ReturningUpdate[RowT], entity: type[RowT]) -> None:
        self.statement = statement
        self.entity = entity
        self._sqlite: _Compiled | None = None  # compiled at its first use

    async def first(self, session: AsyncSession, params: Mapping[str, Any]) -> RowT | None:
        """The updated row (in the session, as a fresh read would be), or None."""
        dialect = session.get_bind().dialect
        if dialect.name != "sqlite":
            return (await session.scalars(
                self.statement, dict(params), execution_options={"populate_existing": True},
            )).one_or_none()
        compiled = self._sqlite
        if compiled is None:
            compiled = self._sqlite = _Compiled(self.statement, self.entity, dialect)
        sql, values = compiled.arguments(params)
        connection = await (await session.connection()).get_raw_connection()
        driver = connection.driver_connection  # aiosqlite's Connection
        assert driver is not None
        rows = list(await driver.execute_fetchall(sql, values))
        if not driver.in_transaction:
            # The driver committed the UPDATE on its own (an autocommit connection): the
            # rest of the transaction could no longer undo it. Never expected here.
            raise RuntimeError("SQLite's driver ran the decisive UPDATE outside the "
                               "session's transaction")
        if not rows:
            return None
        (raw,) = rows
        found = self.entity(**compiled.row(tuple(raw)))
        # Known to the session as the row it now is (its identity map may hold an older
        # copy, read earlier in this transaction: it is brought up to date).
        make_transient_to_detached(found)
        return await session.merge(found, load=False)
