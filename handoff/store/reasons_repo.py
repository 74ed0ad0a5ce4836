"""The admin's named lists for agents' states: pause reasons (why an agent is away) and
dispositions (how a call ended, picked at wrap-up). A row is never deleted, only marked
removed, so the agents and calls that carry it keep naming one thing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.handoffs import AGENT_BUSY_STATES
from handoff.store.errors import NotFound
from handoff.store.models import Call, Disposition, PauseReason, QueueRecord
from handoff.store.queues_repo import last_connected
from handoff.store.transitions import Clock

RowT = TypeVar("RowT", PauseReason, Disposition)


class _NamedRows(Generic[RowT]):
    model: type[RowT]
    kind: str

    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def _added(self, row: RowT) -> RowT:
        self._session.add(row)
        await self._session.flush()
        return row

    async def get(self, row_id: int) -> RowT:
        row = await self._session.get(self.model, row_id)
        if row is None:
            raise NotFound(self.kind, row_id)
        return row

    async def by_name(self, name: str) -> RowT | None:
        return (await self._session.scalars(
            select(self.model).where(self.model.name == name))).one_or_none()

    async def listed(self, *, include_removed: bool = False) -> Sequence[RowT]:
        query = select(self.model).order_by(self.model.name)
        if not include_removed:
            query = query.where(self.model.removed_at.is_(None))
        return (await self._session.scalars(query)).all()

    async def remove(self, row_id: int) -> RowT:
        """No longer offered; the row stays for those who carry it and the audit log."""
        row = (await self._session.scalars(
            update(self.model).where(self.model.id == row_id)
            .values(removed_at=self._clock()).returning(self.model),
            execution_options={"populate_existing": True})).one_or_none()
        if row is None:
            raise NotFound(self.kind, row_id)
        return row


class PauseReasonsRepo(_NamedRows[PauseReason]):
    model = PauseReason
    kind = "pause reason"

    async def add(self, name: str, *, productive: bool) -> PauseReason:
        return await self._added(
            PauseReason(name=name, productive=productive, created_at=self._clock()))


class DispositionsRepo(_NamedRows[Disposition]):
    model = Disposition
    kind = "disposition"

    async def add(self, name: str) -> Disposition:
        return await self._added(Disposition(name=name, created_at=self._clock()))

    async def record(self, call_id: str, disposition: Disposition) -> Call:
        """Keep `disposition` on the call (a second pick replaces the first)."""
        call = (await self._session.scalars(
            update(Call).where(Call.id == call_id)
            .values(disposition_id=disposition.id).returning(Call),
            execution_options={"populate_existing": True})).one_or_none()
        if call is None:
            raise NotFound("call", call_id)
        return call

    async def undisposed(self, agent_id: int) -> tuple[Call, bool] | None:
        """The agent's last call, over and with no disposition yet, and whether its
        queue requires one (a call they are still on is not over: None)."""
        last = await last_connected(self._session, agent_id)
        if last is None or last.state in AGENT_BUSY_STATES:
            return None
        call = await self._session.get(Call, last.call_id, populate_existing=True)
        if call is None or call.disposition_id is not None:
            return None
        queue = None if last.queue_id is None else await self._session.get(
            QueueRecord, last.queue_id)
        return call, queue is not None and queue.disposition_required

    async def owed_by(self, agent_id: int) -> Call | None:
        """The agent's last call, if its queue requires a disposition it lacks."""
        found = await self.undisposed(agent_id)
        return found[0] if found is not None and found[1] else None
