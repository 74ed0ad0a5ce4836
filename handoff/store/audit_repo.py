"""The audit trail: takeovers, transfers, duty changes, logins, admin changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.models import AuditEvent
from handoff.store.transitions import Clock


class AuditRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def record(
        self, actor: str, action: str, subject: str, detail: Mapping[str, Any] | None = None
    ) -> AuditEvent:
        event = AuditEvent(
            at=self._clock(), actor=actor, action=action, subject=subject,
            detail=dict(detail or {}),
        )
        self._session.add(event)
        await self._session.flush()
        return event

    async def recent(self, limit: int = 100) -> Sequence[AuditEvent]:
        result = await self._session.scalars(
            select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
        )
        return result.all()
