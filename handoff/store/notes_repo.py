"""Notes agents write about a call or a caller."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.models import Note
from handoff.store.transitions import Clock


class NotesRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def add(
        self,
        text: str,
        *,
        call_id: str | None = None,
        contact_number: str | None = None,
        author_id: int | None = None,
    ) -> Note:
        if call_id is None and contact_number is None:
            raise ValueError("a note belongs to a call, a contact, or both")
        note = Note(
            text=text,
            call_id=call_id,
            contact_number=contact_number,
            author_id=author_id,
            at=self._clock(),
        )
        self._session.add(note)
        await self._session.flush()
        return note

    async def for_call(self, call_id: str) -> Sequence[Note]:
        result = await self._session.scalars(
            select(Note).where(Note.call_id == call_id).order_by(Note.at, Note.id)
        )
        return result.all()

    async def for_contact(self, number: str) -> Sequence[Note]:
        result = await self._session.scalars(
            select(Note).where(Note.contact_number == number).order_by(Note.at, Note.id)
        )
        return result.all()
