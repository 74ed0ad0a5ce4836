"""Trunks the admin page and the CLI manage; the settings file's are not stored."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.errors import NotFound
from handoff.store.models import TrunkRecord
from handoff.store.transitions import Clock
from handoff.trunks import Trunk


def as_trunk(row: TrunkRecord) -> Trunk:
    return Trunk(
        name=row.name, host=row.host, port=row.port, auth=row.auth, username=row.username,
        password=row.password, caller_id=row.caller_id, codecs=tuple(row.codecs),
        patterns=tuple(row.patterns), allow_international=row.allow_international,
        allow_premium=row.allow_premium, enabled=row.enabled, source="store",
    )


class TrunksRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def all(self) -> Sequence[TrunkRecord]:
        """Oldest first: the order in which calls out try them."""
        result = await self._session.scalars(
            select(TrunkRecord).order_by(TrunkRecord.id),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def in_order(self, fixed: Sequence[Trunk]) -> list[tuple[Trunk, int | None]]:
        """Every trunk, in the order calls out try them, with its row id (None: not
        stored): ``fixed`` (the settings file's, the demo's) first, then the stored ones
        oldest first, without any whose name a fixed trunk has (the file wins)."""
        taken = {t.name for t in fixed}
        stored = [(as_trunk(row), row.id) for row in await self.all() if row.name not in taken]
        return [*((t, None) for t in fixed), *stored]

    async def get(self, trunk_id: int) -> TrunkRecord:
        row = await self._session.get(TrunkRecord, trunk_id, populate_existing=True)
        if row is None:
            raise NotFound("trunk", trunk_id)
        return row

    async def by_name(self, name: str) -> TrunkRecord | None:
        result = await self._session.scalars(
            select(TrunkRecord).where(TrunkRecord.name == name),
            execution_options={"populate_existing": True},
        )
        return result.one_or_none()

    async def create(self, trunk: Trunk) -> TrunkRecord:
        row = TrunkRecord(name=trunk.name, created_at=self._clock())
        self._fill(row, trunk)
        self._session.add(row)
        await self._session.flush()
        return row

    async def update(self, trunk_id: int, trunk: Trunk) -> TrunkRecord:
        row = await self.get(trunk_id)
        row.name = trunk.name
        self._fill(row, trunk)
        await self._session.flush()
        return row

    async def delete(self, trunk_id: int) -> TrunkRecord:
        row = await self.get(trunk_id)
        await self._session.delete(row)
        await self._session.flush()
        return row

    @staticmethod
    def _fill(row: TrunkRecord, trunk: Trunk) -> None:
        row.host, row.port, row.auth = trunk.host, trunk.port, trunk.auth
        row.username, row.password, row.caller_id = trunk.username, trunk.password, trunk.caller_id
        row.codecs, row.patterns = list(trunk.codecs), list(trunk.patterns)
        row.allow_international, row.allow_premium = trunk.allow_international, trunk.allow_premium
        row.enabled = trunk.enabled
