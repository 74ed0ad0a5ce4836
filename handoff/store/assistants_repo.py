"""Assistants: the AI voice agents, the numbers they answer, and their handoff rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.assistants import DEFAULT_ACCEPT_TIMEOUT_S, FallbackKind, HandoffLevel, HoldMode
from handoff.store.errors import NotFound
from handoff.store.models import Assistant


class AssistantsRepo:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        *,
        name: str,
        number_pattern: str,
        adapter: str,
        control_token_hash: str,
        handoff_level: HandoffLevel = HandoffLevel.BALANCED,
        restricted_topics: Iterable[str] = (),
        accept_timeout_s: int = DEFAULT_ACCEPT_TIMEOUT_S,
        fallback_kind: FallbackKind = FallbackKind.AI_CALLBACK,
        fallback_number: str | None = None,
        hold_mode: HoldMode = HoldMode.AI,
    ) -> Assistant:
        if fallback_kind is FallbackKind.NUMBER and not fallback_number:
            raise ValueError(f"assistant {name!r}: fallback_kind=number needs fallback_number")
        assistant = Assistant(
            name=name,
            number_pattern=number_pattern,
            adapter=adapter,
            control_token_hash=control_token_hash,
            handoff_level=handoff_level,
            restricted_topics=list(restricted_topics),
            accept_timeout_s=accept_timeout_s,
            fallback_kind=fallback_kind,
            fallback_number=fallback_number,
            hold_mode=hold_mode,
        )
        self._session.add(assistant)
        await self._session.flush()
        return assistant

    async def set_control_token_hash(self, name: str, token_hash: str) -> None:
        """A built-in engine gets a fresh token at every start; only its hash is kept."""
        await self._session.execute(
            update(Assistant).where(Assistant.name == name).values(control_token_hash=token_hash)
        )

    async def get(self, assistant_id: int) -> Assistant:
        assistant = await self._session.get(Assistant, assistant_id, populate_existing=True)
        if assistant is None:
            raise NotFound("assistant", assistant_id)
        return assistant

    async def by_name(self, name: str) -> Assistant | None:
        result = await self._session.scalars(
            select(Assistant).where(Assistant.name == name),
            execution_options={"populate_existing": True},
        )
        return result.one_or_none()

    async def all(self) -> Sequence[Assistant]:
        result = await self._session.scalars(
            select(Assistant).order_by(Assistant.id),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def set_handoff_rules(
        self, assistant_id: int, *, handoff_level: HandoffLevel, accept_timeout_s: int,
        fallback_kind: FallbackKind, fallback_number: str | None,
    ) -> Assistant:
        """What an admin tunes on the admin page; takes effect with the next handoff."""
        assistant = await self.get(assistant_id)
        assistant.handoff_level = handoff_level
        assistant.accept_timeout_s = accept_timeout_s
        assistant.fallback_kind = fallback_kind
        assistant.fallback_number = fallback_number
        await self._session.flush()
        return assistant
