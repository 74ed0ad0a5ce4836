"""Contacts: names for caller numbers, shown on cards instead of bare digits."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.models import Contact


class ContactsRepo:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def save(self, number: str, name: str) -> Contact:
        contact = await self._session.merge(Contact(number=number, name=name))
        await self._session.flush()
        return contact

    async def name_for(self, number: str) -> str | None:
        contact = await self._session.get(Contact, number, populate_existing=True)
        return None if contact is None else contact.name
