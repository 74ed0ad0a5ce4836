"""Transcript segments: what caller, AI and agent said, in order, per call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.calls import Speaker
from handoff.store.models import TranscriptSegment
from handoff.store.transitions import Clock


class TranscriptsRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def append(
        self, call_id: str, speaker: Speaker, text: str, *, at: datetime | None = None
    ) -> TranscriptSegment:
        segment = TranscriptSegment(
            call_id=call_id, speaker=speaker, text=text, at=at or self._clock()
        )
        self._session.add(segment)
        await self._session.flush()
        return segment

    async def for_call(
        self, call_id: str, *, since: datetime | None = None
    ) -> Sequence[TranscriptSegment]:
        """The call's transcript, oldest first; `since` gives only the part after a moment
        (the human part, handed to the AI when the call returns to it)."""
        query = select(TranscriptSegment).where(TranscriptSegment.call_id == call_id)
        if since is not None:
            query = query.where(TranscriptSegment.at >= since)
        result = await self._session.scalars(
            query.order_by(TranscriptSegment.at, TranscriptSegment.id)
        )
        return result.all()
