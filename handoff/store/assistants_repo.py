"""Assistants: the AI voice agents, the numbers they answer, their engines and their
handoff rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.assistants import (
    DEFAULT_ACCEPT_TIMEOUT_S,
    EngineKind,
    FallbackKind,
    HandoffLevel,
    HoldMode,
)
from handoff.hours import Hours
from handoff.menus import Menu
from handoff.store.errors import NotFound, Removed
from handoff.store.models import Assistant, AssistantNumber
from handoff.store.transitions import utc_now
from handoff.topics import Topic


class AssistantsRepo:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        *,
        name: str,
        numbers: Iterable[str],
        control_token_hash: str,
        engine: EngineKind = EngineKind.BUILTIN,
        engine_address: str | None = None,
        handoff_level: HandoffLevel = HandoffLevel.BALANCED,
        restricted_topics: Iterable[Topic] = (),
        accept_timeout_s: int = DEFAULT_ACCEPT_TIMEOUT_S,
        fallback_kind: FallbackKind = FallbackKind.AI_CALLBACK,
        fallback_number: str | None = None,
        hold_mode: HoldMode = HoldMode.AI,
    ) -> Assistant:
        if fallback_kind is FallbackKind.NUMBER and not fallback_number:
            raise ValueError(f"assistant {name!r}: fallback_kind=number needs fallback_number")
        _check_engine(name, engine, engine_address)
        assistant = Assistant(
            name=name,
            engine=engine,
            engine_address=engine_address,
            control_token_hash=control_token_hash,
            handoff_level=handoff_level,
            restricted_topics=[t.to_json() for t in restricted_topics],
            accept_timeout_s=accept_timeout_s,
            fallback_kind=fallback_kind,
            fallback_number=fallback_number,
            hold_mode=hold_mode,
        )
        self._session.add(assistant)
        await self._session.flush()
        await self.set_numbers(assistant.id, numbers)
        return assistant

    async def get(self, assistant_id: int) -> Assistant:
        assistant = await self._session.get(Assistant, assistant_id, populate_existing=True)
        if assistant is None:
            raise NotFound("assistant", assistant_id)
        return assistant

    async def by_name(self, name: str) -> Assistant | None:
        """Any assistant by name, removed ones included (their calls still name them)."""
        result = await self._session.scalars(
            select(Assistant).where(Assistant.name == name),
            execution_options={"populate_existing": True},
        )
        return result.one_or_none()

    async def answering(self, name: str) -> Assistant | None:
        """The assistant a new call to one of its numbers goes to: None if it does not
        exist, is disabled or removed (the number is then treated as unknown)."""
        assistant = await self.by_name(name)
        return assistant if assistant is not None and assistant.enabled else None

    async def all(self) -> Sequence[Assistant]:
        """Every assistant, removed ones included: the history names them."""
        result = await self._session.scalars(
            select(Assistant).order_by(Assistant.id),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def listed(self) -> Sequence[Assistant]:
        """The assistants an admin manages: all but the removed."""
        return [a for a in await self.all() if a.removed_at is None]

    # ---- numbers -------------------------------------------------------------------------

    async def numbers(self) -> dict[int, list[str]]:
        """Every assistant's numbers, by assistant id, each list in the order given."""
        rows = await self._session.scalars(
            select(AssistantNumber).order_by(AssistantNumber.id))
        out: dict[int, list[str]] = {}
        for row in rows:
            out.setdefault(row.assistant_id, []).append(row.pattern)
        return out

    async def numbers_of(self, assistant_id: int) -> list[str]:
        return (await self.numbers()).get(assistant_id, [])

    async def owner_of(self, pattern: str) -> Assistant | None:
        """The assistant that answers exactly ``pattern``, if any."""
        row = await self._session.scalar(
            select(AssistantNumber).where(AssistantNumber.pattern == pattern))
        return None if row is None else await self.get(row.assistant_id)

    async def set_numbers(self, assistant_id: int, numbers: Iterable[str]) -> None:
        """Replace the assistant's numbers (a pattern another assistant answers fails on
        the unique constraint: the caller checks with owner_of first, to say who)."""
        await self._session.execute(
            delete(AssistantNumber).where(AssistantNumber.assistant_id == assistant_id))
        # Flushed before the new rows: a number kept across the edit is deleted and
        # inserted again, and the unique constraint must not see it twice.
        await self._session.flush()
        for pattern in dict.fromkeys(numbers):
            self._session.add(AssistantNumber(assistant_id=assistant_id, pattern=pattern))
        await self._session.flush()

    # ---- engine, token, rules ----------------------------------------------------------

    async def set_engine(
        self, assistant_id: int, engine: EngineKind, address: str | None
    ) -> Assistant:
        assistant = await self._live(assistant_id)
        _check_engine(assistant.name, engine, address)
        assistant.engine, assistant.engine_address = engine, address
        await self._session.flush()
        return assistant

    async def set_control_token_hash(self, assistant_id: int, token_hash: str,
                                     builtin_token: str | None = None) -> None:
        """The old token stops working with this commit: every request checks the hash.
        ``builtin_token``: the token itself, when the built-in receptionist holds it."""
        assistant = await self.get(assistant_id)
        assistant.control_token_hash = token_hash
        assistant.builtin_token = builtin_token
        await self._session.flush()

    async def set_handoff_rules(
        self, assistant_id: int, *, handoff_level: HandoffLevel, accept_timeout_s: int,
        fallback_kind: FallbackKind, fallback_number: str | None,
    ) -> Assistant:
        """What an admin tunes on the admin page; takes effect with the next handoff."""
        assistant = await self._live(assistant_id)
        assistant.handoff_level = handoff_level
        assistant.accept_timeout_s = accept_timeout_s
        assistant.fallback_kind = fallback_kind
        assistant.fallback_number = fallback_number
        await self._session.flush()
        return assistant

    async def set_restricted_topics(self, assistant_id: int, topics: Iterable[Topic]) -> Assistant:
        """Replace the topics; the next caller line and handoff request are judged by them."""
        assistant = await self._live(assistant_id)
        # A new list, not the old one changed in place: the JSON column is written only
        # when the attribute is assigned.
        assistant.restricted_topics = [t.to_json() for t in topics]
        await self._session.flush()
        return assistant

    async def set_hours(self, assistant_id: int, hours: Hours) -> Assistant:
        """Replace the weekly spans and holidays; the next call is judged by them."""
        assistant = await self._live(assistant_id)
        assistant.hours = hours.span_texts()
        assistant.holidays = hours.holiday_texts()
        await self._session.flush()
        return assistant

    async def set_menu(self, assistant_id: int, menu: Menu) -> Assistant:
        """Replace the DTMF menu; the next call to its numbers hears it."""
        assistant = await self._live(assistant_id)
        assistant.menu = menu.to_json()
        await self._session.flush()
        return assistant

    async def set_announcements(self, assistant_id: int,
                                announcements: dict[str, str]) -> Assistant:
        """What the caller is told when a person joins (checked by
        handoff.assistants.check_announcements); the next such moment says it."""
        assistant = await self._live(assistant_id)
        assistant.announcements = dict(announcements)
        await self._session.flush()
        return assistant

    # ---- disable, enable, remove ---------------------------------------------------------

    async def disable(self, assistant_id: int) -> Assistant:
        assistant = await self._live(assistant_id)
        if assistant.enabled:
            assistant.disabled_at = utc_now()
            await self._session.flush()
        return assistant

    async def enable(self, assistant_id: int) -> Assistant:
        assistant = await self._live(assistant_id)
        assistant.disabled_at = None
        await self._session.flush()
        return assistant

    async def remove(self, assistant_id: int) -> Assistant:
        """Disabled and gone from the lists; its numbers are free for another assistant.
        The name stays taken, so a name in the history never means two assistants."""
        assistant = await self.disable(assistant_id)
        assistant.removed_at = utc_now()
        await self.set_numbers(assistant_id, ())
        return assistant

    async def _live(self, assistant_id: int) -> Assistant:
        assistant = await self.get(assistant_id)
        if assistant.removed_at is not None:
            raise Removed(assistant_id, "assistant")
        return assistant


def _check_engine(name: str, engine: EngineKind, address: str | None) -> None:
    if (engine is EngineKind.AUDIOSOCKET) != bool(address):
        raise ValueError(f"assistant {name!r}: an audiosocket engine, and only it, "
                         "has an address (host:port)")
