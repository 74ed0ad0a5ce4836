"""Dashboard sessions: which browser is signed in as which agent, until when."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.models import Agent, DashboardSession
from handoff.store.transitions import Clock


class SessionsRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def create(
        self, *, id_hash: str, agent_id: int, csrf_token: str, expires_at: datetime
    ) -> DashboardSession:
        now = self._clock()
        row = DashboardSession(
            id_hash=id_hash, agent_id=agent_id, csrf_token=csrf_token,
            created_at=now, last_seen_at=now, expires_at=expires_at,
        )
        self._session.add(row)
        await self._session.flush()
        return row

    async def live(self, id_hash: str) -> tuple[DashboardSession, Agent] | None:
        """The session and its agent, or None when unknown or expired."""
        result = await self._session.execute(
            select(DashboardSession, Agent)
            .join(Agent, Agent.id == DashboardSession.agent_id)
            .where(DashboardSession.id_hash == id_hash,
                   DashboardSession.expires_at > self._clock()),
            execution_options={"populate_existing": True},
        )
        row = result.one_or_none()
        return None if row is None else (row[0], row[1])

    async def touch(self, id_hash: str, *, expires_at: datetime) -> None:
        await self._session.execute(
            update(DashboardSession)
            .where(DashboardSession.id_hash == id_hash)
            .values(last_seen_at=self._clock(), expires_at=expires_at)
        )

    async def delete(self, id_hash: str) -> bool:
        result = await self._session.execute(
            delete(DashboardSession).where(DashboardSession.id_hash == id_hash)
        )
        return bool(getattr(result, "rowcount", 0))

    async def delete_for_agent(self, agent_id: int) -> int:
        result = await self._session.execute(
            delete(DashboardSession).where(DashboardSession.agent_id == agent_id)
        )
        return int(getattr(result, "rowcount", 0))

    async def count_for_agent(self, agent_id: int) -> int:
        count = await self._session.scalar(
            select(func.count()).select_from(DashboardSession).where(
                DashboardSession.agent_id == agent_id,
                DashboardSession.expires_at > self._clock(),
            )
        )
        return int(count or 0)

    async def live_hashes(self, id_hashes: Sequence[str]) -> set[str]:
        """Which of these sessions still exist: open WebSockets of the others are closed."""
        if not id_hashes:
            return set()
        rows = await self._session.scalars(
            select(DashboardSession.id_hash).where(
                DashboardSession.id_hash.in_(list(id_hashes)),
                DashboardSession.expires_at > self._clock(),
            )
        )
        return set(rows.all())

    async def delete_expired(self) -> int:
        result = await self._session.execute(
            delete(DashboardSession).where(DashboardSession.expires_at <= self._clock())
        )
        return int(getattr(result, "rowcount", 0))
