"""Pause reasons: the admin's list of why an agent may be away."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.errors import NotFound
from handoff.store.models import PauseReason
from handoff.store.transitions import Clock


class PauseReasonsRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def add(self, name: str, *, productive: bool) -> PauseReason:
        row = PauseReason(name=name, productive=productive, created_at=self._clock())
        self._session.add(row)
        await self._session.flush()
        return row

    async def get(self, reason_id: int) -> PauseReason:
        row = await self._session.get(PauseReason, reason_id)
        if row is None:
            raise NotFound("pause reason", reason_id)
        return row

    async def by_name(self, name: str) -> PauseReason | None:
        return (await self._session.scalars(
            select(PauseReason).where(PauseReason.name == name))).one_or_none()

    async def listed(self, *, include_removed: bool = False) -> Sequence[PauseReason]:
        query = select(PauseReason).order_by(PauseReason.name)
        if not include_removed:
            query = query.where(PauseReason.removed_at.is_(None))
        return (await self._session.scalars(query)).all()

    async def remove(self, reason_id: int) -> PauseReason:
        """Off the desk's menu; the row stays, for the agents paused for it and the log."""
        row = (await self._session.scalars(
            update(PauseReason).where(PauseReason.id == reason_id)
            .values(removed_at=self._clock()).returning(PauseReason),
            execution_options={"populate_existing": True})).one_or_none()
        if row is None:
            raise NotFound("pause reason", reason_id)
        return row
