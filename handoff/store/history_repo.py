"""After the call: the history of ended calls, a number's conversation, follow-ups.

Who *handled* a call is the agent of its last handoff that reached an agent
(``connected_at`` set): the person the caller last talked to. An agent's own view of
history is the calls they handled, and the voicemails left for them (a call-back to
make): those of an assistant whose default queue they are a member of, or of one
without a queue, whose cards go to every agent. Supervisors and admins pass
``handled_by=None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Exists, Select, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.calls import CallOutcome, CallState
from handoff.store.models import (
    Agent,
    Assistant,
    Call,
    Contact,
    Disposition,
    Handoff,
    QueueMember,
)
from handoff.store.transitions import Clock

# Outcomes after which the caller is still owed something: a call back.
NEEDS_FOLLOW_UP = frozenset(
    {CallOutcome.CALLBACK_REQUESTED, CallOutcome.ABANDONED, CallOutcome.FAILED}
)
MAX_ROWS = 500


@dataclass(frozen=True, slots=True)
class CallFilter:
    outcome: CallOutcome | None = None
    agent_id: int | None = None  # handled by
    since: datetime | None = None
    until: datetime | None = None
    number: str | None = None  # a part of the caller's number
    caller_number: str | None = None  # exactly this number (a contact's page)
    # Visibility: only the calls this agent handled, and voicemails left for them.
    handled_by: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    call: Call
    agent: Agent | None  # who handled it, None: the AI (or nobody) did
    # What the agent picked at wrap-up, by name (None: none picked).
    disposition: str | None = None

    @property
    def duration_s(self) -> int | None:
        if self.call.ended_at is None:
            return None
        start = self.call.answered_at or self.call.started_at
        return max(0, round((self.call.ended_at - start).total_seconds()))


@dataclass(frozen=True, slots=True)
class Conversation:
    number: str
    name: str | None
    follow_up: bool
    resolved_at: datetime | None
    # Calls that ended needing something after the last resolution, and live calls.
    pending_calls: int

    @property
    def resolved(self) -> bool:
        return not self.follow_up and self.pending_calls == 0


def _handler_ids() -> Select[str, int]:
    """call id -> the id of its last handoff that reached an agent."""
    return (
        select(Handoff.call_id, func.max(Handoff.id).label("handoff_id"))
        .where(Handoff.connected_at.is_not(None))
        .group_by(Handoff.call_id)
    )


class HistoryRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def calls(self, where: CallFilter, *, limit: int = 100,
                    offset: int = 0) -> list[HistoryRow]:
        last = _handler_ids().subquery()
        handler = select(Handoff.call_id, Handoff.accepted_by).join(
            last, Handoff.id == last.c.handoff_id).subquery()
        query = (
            select(Call, Agent, Disposition.name)
            .outerjoin(handler, handler.c.call_id == Call.id)
            .outerjoin(Agent, Agent.id == handler.c.accepted_by)
            .outerjoin(Disposition, Disposition.id == Call.disposition_id)
            .where(Call.state == CallState.ENDED)
        )
        if where.outcome is not None:
            query = query.where(Call.outcome == where.outcome)
        if where.agent_id is not None:
            query = query.where(handler.c.accepted_by == where.agent_id)
        if where.since is not None:
            query = query.where(Call.started_at >= where.since)
        if where.until is not None:
            query = query.where(Call.started_at < where.until)
        if where.number:
            query = query.where(Call.caller_number.contains(where.number, autoescape=True))
        if where.caller_number is not None:
            query = query.where(Call.caller_number == where.caller_number)
        if where.handled_by is not None:
            query = query.where(self._visible_to(where.handled_by))
        query = query.order_by(Call.started_at.desc(), Call.id).limit(
            min(limit, MAX_ROWS)).offset(offset)
        result = await self._session.execute(query)
        return [HistoryRow(call, agent, disposition)
                for call, agent, disposition in result.all()]

    async def call(self, call_id: str) -> HistoryRow | None:
        last = _handler_ids().where(Handoff.call_id == call_id).subquery()
        found = (await self._session.execute(
            select(Agent).join(Handoff, Handoff.accepted_by == Agent.id)
            .join(last, Handoff.id == last.c.handoff_id)
        )).scalar_one_or_none()
        call = await self._session.get(Call, call_id, populate_existing=True)
        if call is None:
            return None
        disposition = None if call.disposition_id is None else await self._session.get(
            Disposition, call.disposition_id)
        return HistoryRow(call, found, disposition.name if disposition else None)

    async def handled(self, call_id: str, agent_id: int) -> bool:
        """Whether the agent talked to the caller on this call (any part of it)."""
        return bool(await self._session.scalar(
            select(func.count()).select_from(Call).where(
                Call.id == call_id, self._handled_by(agent_id))
        ))

    async def may_hear(self, call_id: str, agent_id: int) -> bool:
        """Whether the agent may see the call and play its recording: they handled it,
        or it is a voicemail left for them."""
        return bool(await self._session.scalar(
            select(func.count()).select_from(Call).where(
                Call.id == call_id, self._visible_to(agent_id))
        ))

    async def handled_number(self, number: str, agent_id: int) -> bool:
        """Whether the agent may see the number's page (and call it back)."""
        return bool(await self._session.scalar(
            select(func.count()).select_from(Call).where(
                Call.caller_number == number, self._visible_to(agent_id))
        ))

    async def conversation(self, number: str) -> Conversation:
        contact = await self._session.get(Contact, number, populate_existing=True)
        since = contact.resolved_at if contact else None
        pending = select(func.count()).select_from(Call).where(
            Call.caller_number == number,
            (Call.state != CallState.ENDED) | Call.outcome.in_(NEEDS_FOLLOW_UP),
        )
        if since is not None:
            pending = pending.where(
                (Call.state != CallState.ENDED) | (Call.ended_at > since))
        return Conversation(
            number=number,
            name=contact.name if contact and contact.name else None,
            follow_up=bool(contact and contact.follow_up),
            resolved_at=since,
            pending_calls=int(await self._session.scalar(pending) or 0),
        )

    async def set_follow_up(self, number: str, follow_up: bool) -> Contact:
        contact = await self._contact(number)
        contact.follow_up = follow_up
        await self._session.flush()
        return contact

    async def resolve(self, number: str, agent_id: int) -> Contact:
        """Resolved by hand: the flag goes, and what ended before now is settled."""
        contact = await self._contact(number)
        contact.follow_up = False
        contact.resolved_at = self._clock()
        contact.resolved_by = agent_id
        await self._session.flush()
        return contact

    async def agents(self) -> Sequence[Agent]:
        return (await self._session.scalars(select(Agent).order_by(Agent.display_name))).all()

    async def _contact(self, number: str) -> Contact:
        contact = await self._session.get(Contact, number, populate_existing=True)
        if contact is None:
            contact = Contact(number=number, name="", follow_up=False)
            self._session.add(contact)
        return contact

    @staticmethod
    def _visible_to(agent_id: int) -> ColumnElement[bool]:
        # A voicemail is a call-back to make: those who would have got its card hear it.
        for_them = or_(
            exists().where(Assistant.id == Call.assistant_id, Assistant.queue_id.is_(None)),
            exists().where(Assistant.id == Call.assistant_id,
                           QueueMember.queue_id == Assistant.queue_id,
                           QueueMember.agent_id == agent_id))
        return or_(HistoryRepo._handled_by(agent_id),
                   and_(Call.voicemail_at.is_not(None), for_them))

    @staticmethod
    def _handled_by(agent_id: int) -> Exists:
        return exists().where(and_(Handoff.call_id == Call.id,
                                   Handoff.accepted_by == agent_id,
                                   Handoff.connected_at.is_not(None)))
