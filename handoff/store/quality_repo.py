"""Each leg's figures as Asterisk measured them when it ended (handoff.quality), filed
under its call and, for an agent's leg, its handoff."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.quality import LegQuality
from handoff.store.models import Call, Handoff, LegQualityRecord
from handoff.store.transitions import Clock

CALLER, AGENT = "caller", "agent"


def figures_of(row: LegQualityRecord) -> LegQuality:
    """The figures a recorded leg holds (to say why one is absent, say)."""
    return LegQuality(**{f.name: getattr(row, f.name) for f in fields(LegQuality)})


class QualityRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def record(self, channel_id: str, figures: LegQuality) -> LegQualityRecord | None:
        """File a leg's figures; None for a leg that is neither a caller's nor a
        handoff's agent leg (an AI, a supervisor's ear, a leg staged but never rung).

        Found by channel in the ledger rather than in the controller's memory: the
        caller's hang-up ends the call before its agent's leg reports, and a restarted
        controller knows the legs it adopted only from the ledger.
        """
        handoff = (await self._session.execute(
            select(Handoff.id, Handoff.call_id).where(Handoff.agent_channel_id == channel_id)
            .order_by(Handoff.id.desc()).limit(1))).one_or_none()
        if handoff is not None:
            call_id, handoff_id, leg = handoff.call_id, handoff.id, AGENT
        else:
            call_id = await self._session.scalar(
                select(Call.id).where(Call.caller_channel_id == channel_id)
                .order_by(Call.started_at.desc()).limit(1))
            if call_id is None:
                return None
            handoff_id, leg = None, CALLER
        row = LegQualityRecord(call_id=call_id, handoff_id=handoff_id, leg=leg,
                               channel_id=channel_id, ended_at=self._clock(),
                               **asdict(figures))
        self._session.add(row)
        await self._session.flush()
        return row

    async def for_call(self, call_id: str) -> Sequence[LegQualityRecord]:
        return (await self._session.scalars(
            select(LegQualityRecord).where(LegQualityRecord.call_id == call_id)
            .order_by(LegQualityRecord.id))).all()
