"""The audit trail: takeovers, transfers, duty changes, logins, admin changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.models import AuditEvent
from handoff.store.transitions import Clock


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which lines of the audit log to read; None: any."""

    # Lines by this login, or about this person (subject "agent:<id>").
    login: str | None = None
    agent_id: int | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


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

    async def recent(self, limit: int = 100, where: AuditFilter | None = None
                     ) -> Sequence[AuditEvent]:
        query = select(AuditEvent)
        if where is not None:
            people = []
            if where.login is not None:
                people.append(AuditEvent.actor == where.login)
            if where.agent_id is not None:
                people.append(AuditEvent.subject == f"agent:{where.agent_id}")
            if people:
                query = query.where(or_(*people))
            if where.action is not None:
                query = query.where(AuditEvent.action == where.action)
            if where.since is not None:
                query = query.where(AuditEvent.at >= where.since)
            if where.until is not None:
                query = query.where(AuditEvent.at < where.until)
        result = await self._session.scalars(
            query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
        )
        return result.all()

    async def last(self, subject: str, action: str) -> AuditEvent | None:
        """The latest line of `action` about `subject` (e.g. an agent's presence change)."""
        return (await self._session.scalars(
            select(AuditEvent).where(AuditEvent.subject == subject, AuditEvent.action == action)
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(1)
        )).one_or_none()
