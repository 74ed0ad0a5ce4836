"""Queues: their settings and members, where cards are routed, who is free to be offered
one, and the offers themselves (one row each: to whom, when, how it ended)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.agents import Presence
from handoff.handoffs import HANDOFF_LIFECYCLE, HandoffState
from handoff.queues import Candidate, OfferOutcome, Strategy, within_service_level
from handoff.store.agents_repo import busy_agents_query
from handoff.store.errors import NotFound
from handoff.store.models import Agent, Assistant, Handoff, QueueMember, QueueOffer, QueueRecord
from handoff.store.transitions import Clock

# Members who will be free soon: a caller waits for them rather than fall back at once.
_COMING_BACK = (Presence.AVAILABLE, Presence.WRAP_UP)


@dataclass(frozen=True, slots=True)
class Member:
    agent_id: int
    login: str
    position: int
    level: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's figures over the cards that entered it (the floor view's, in short)."""

    entered: int  # cards queued
    answered: int  # taken by a member
    within_service_level: int  # taken within the queue's service-level threshold
    not_answered: int  # the caller hung up, or the maximum wait sent them to the fallback
    waiting: int  # still on offer
    no_answers: int  # offers whose ring window passed untaken
    average_wait_s: float | None  # from queued to taken, over the answered

    @property
    def service_level(self) -> float | None:
        """The share of the cards over (answered or not) that were taken within the
        threshold, or None before any is over."""
        over = self.answered + self.not_answered
        return self.within_service_level / over if over else None


class QueuesRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    # ---- settings ------------------------------------------------------------------------

    async def create(self, *, name: str, strategy: Strategy, ring_s: int, max_wait_s: int,
                     service_level_s: int, no_answer_limit: int,
                     disposition_required: bool = False,
                     topics: Iterable[str] = (), hours: Iterable[str] = (),
                     holidays: Iterable[str] = ()) -> QueueRecord:
        row = QueueRecord(name=name, strategy=strategy, ring_s=ring_s, max_wait_s=max_wait_s,
                          service_level_s=service_level_s, no_answer_limit=no_answer_limit,
                          disposition_required=disposition_required,
                          topics=list(topics), hours=list(hours), holidays=list(holidays),
                          created_at=self._clock())
        self._session.add(row)
        await self._session.flush()
        return row

    async def get(self, queue_id: int) -> QueueRecord:
        row = await self._session.get(QueueRecord, queue_id, populate_existing=True)
        if row is None:
            raise NotFound("queue", queue_id)
        return row

    async def by_name(self, name: str) -> QueueRecord | None:
        return (await self._session.scalars(
            select(QueueRecord).where(QueueRecord.name == name),
            execution_options={"populate_existing": True})).one_or_none()

    async def listed(self) -> Sequence[QueueRecord]:
        """Every queue not removed, oldest first."""
        return (await self._session.scalars(
            select(QueueRecord).where(QueueRecord.removed_at.is_(None)).order_by(QueueRecord.id),
            execution_options={"populate_existing": True})).all()

    async def update(self, queue_id: int, **values: Any) -> QueueRecord:
        row = (await self._session.scalars(
            update(QueueRecord).where(QueueRecord.id == queue_id).values(**values)
            .returning(QueueRecord), execution_options={"populate_existing": True},
        )).one_or_none()
        if row is None:
            raise NotFound("queue", queue_id)
        return row

    async def remove(self, queue_id: int) -> QueueRecord:
        """Out of routing and the lists; its rows stay for the figures. Its assistants'
        cards go to every available agent again."""
        await self.set_assistants(queue_id, [])
        return await self.update(queue_id, removed_at=self._clock(), topics=[])

    async def members(self, queue_id: int) -> list[Member]:
        rows = await self._session.execute(
            select(QueueMember, Agent.login).join(Agent, Agent.id == QueueMember.agent_id)
            .where(QueueMember.queue_id == queue_id).order_by(QueueMember.position))
        return [Member(m.agent_id, login, m.position, m.level) for m, login in rows]

    async def set_members(self, queue_id: int, members: Sequence[tuple[int, int]]) -> None:
        """The members as (agent id, level), in order: the list given replaces the list."""
        existing = (await self._session.scalars(
            select(QueueMember).where(QueueMember.queue_id == queue_id))).all()
        for row in existing:
            await self._session.delete(row)
        await self._session.flush()
        for position, (agent_id, level) in enumerate(members):
            self._session.add(QueueMember(queue_id=queue_id, agent_id=agent_id,
                                          position=position, level=level))
        await self._session.flush()

    async def assistants_of(self, queue_id: int) -> list[str]:
        return list((await self._session.scalars(
            select(Assistant.name).where(Assistant.queue_id == queue_id)
            .order_by(Assistant.id))).all())

    async def set_assistants(self, queue_id: int, assistant_ids: Iterable[int]) -> None:
        """The assistants whose default queue this is (the list given replaces them)."""
        ids = list(assistant_ids)
        await self._session.execute(update(Assistant).where(
            Assistant.queue_id == queue_id, Assistant.id.not_in(ids)).values(queue_id=None))
        if ids:
            await self._session.execute(update(Assistant).where(Assistant.id.in_(ids))
                                        .values(queue_id=queue_id))

    # ---- routing -------------------------------------------------------------------------

    async def route(self, assistant: Assistant | None, topic: str | None) -> QueueRecord | None:
        """The queue a card goes to: its topic's queue, else its assistant's default
        queue, else none (every available agent)."""
        if topic:
            for queue in await self.listed():
                if topic in queue.topics:
                    return queue
        if assistant is not None and assistant.queue_id is not None:
            queue = await self.get(assistant.queue_id)
            if queue.removed_at is None:
                return queue
        return None

    async def reachable_members(self, queue_id: int) -> int:
        """Members on duty who are free or will be soon (on a call, in wrap-up): while
        there is one, a caller waits for them; away or offline ones do not count."""
        return int(await self._session.scalar(
            select(func.count()).select_from(QueueMember)
            .join(Agent, Agent.id == QueueMember.agent_id)
            .where(QueueMember.queue_id == queue_id, Agent.on_duty.is_(True),
                   Agent.presence.in_(_COMING_BACK), Agent.disabled_at.is_(None))) or 0)

    async def is_member(self, queue_id: int, agent_id: int) -> bool:
        return await self._session.get(QueueMember, (queue_id, agent_id)) is not None

    async def candidates(self, queue_id: int, handoff_id: int) -> list[Candidate]:
        """The members who may be offered this card now: on duty and available, not on a
        call (nor with one being put through), and not holding a card of their own."""
        holding = select(Handoff.target_agent_id).where(
            Handoff.state == HandoffState.OFFERED, Handoff.target_agent_id.is_not(None))
        rows = (await self._session.execute(
            select(QueueMember).join(Agent, Agent.id == QueueMember.agent_id).where(
                QueueMember.queue_id == queue_id, Agent.on_duty.is_(True),
                Agent.presence == Presence.AVAILABLE, Agent.disabled_at.is_(None),
                Agent.id.not_in(busy_agents_query()), Agent.id.not_in(holding),
            ).order_by(QueueMember.position))).scalars().all()
        if not rows:
            return []
        ids = [m.agent_id for m in rows]
        idle = {agent: ended for agent, ended in await self._session.execute(
            select(Handoff.accepted_by, func.max(Handoff.ended_at))
            .where(Handoff.accepted_by.in_(ids)).group_by(Handoff.accepted_by))}
        tries = {agent: count for agent, count in await self._session.execute(
            select(QueueOffer.agent_id, func.count())
            .where(QueueOffer.handoff_id == handoff_id, QueueOffer.agent_id.in_(ids))
            .group_by(QueueOffer.agent_id))}
        return [Candidate(m.agent_id, m.position, m.level, _aware(idle.get(m.agent_id)),
                          tries.get(m.agent_id, 0)) for m in rows]

    async def last_position(self, queue_id: int) -> int | None:
        """The place in the list of the member this queue offered a card to last."""
        return await self._session.scalar(
            select(QueueMember.position).join(
                QueueOffer, (QueueOffer.agent_id == QueueMember.agent_id)
                & (QueueOffer.queue_id == QueueMember.queue_id))
            .where(QueueMember.queue_id == queue_id)
            .order_by(QueueOffer.id.desc()).limit(1))

    async def waiting(self, queue_id: int) -> Sequence[Handoff]:
        """The queue's cards on offer that no member holds: most urgent first (an
        emergency before anyone), then the longest waiting."""
        return (await self._session.scalars(
            select(Handoff).where(Handoff.queue_id == queue_id,
                                  Handoff.state == HandoffState.OFFERED,
                                  Handoff.target_agent_id.is_(None))
            .order_by(Handoff.priority.desc(), Handoff.requested_at, Handoff.id),
            execution_options={"populate_existing": True})).all()

    # ---- offers --------------------------------------------------------------------------

    async def open_offer(self, handoff_id: int) -> QueueOffer | None:
        return (await self._session.scalars(
            select(QueueOffer).where(QueueOffer.handoff_id == handoff_id,
                                     QueueOffer.ended_at.is_(None))
            .order_by(QueueOffer.id.desc()).limit(1),
            execution_options={"populate_existing": True})).one_or_none()

    async def offer(self, handoff: Handoff, agent_id: int | None) -> QueueOffer | None:
        """Offer a queued card to one member (their desk alone shows it, their Accept
        alone wins), or with None to every member. None if the card is no longer on
        offer, or a member already holds it."""
        assert handoff.queue_id is not None
        if agent_id is not None:
            held = (await self._session.execute(
                update(Handoff).where(Handoff.id == handoff.id,
                                      Handoff.state == HandoffState.OFFERED,
                                      Handoff.target_agent_id.is_(None))
                .values(target_agent_id=agent_id, version=Handoff.version + 1)
                .returning(Handoff.id))).one_or_none()
            if held is None:
                return None
        row = QueueOffer(queue_id=handoff.queue_id, handoff_id=handoff.id,
                         call_id=handoff.call_id, agent_id=agent_id,
                         offered_at=self._clock(), set_away=False)
        self._session.add(row)
        await self._session.flush()
        return row

    async def missed(self, offer_id: int, limit: int) -> tuple[QueueOffer, bool] | None:
        """The ring window of offer `offer_id` passed: the card leaves the member (unless
        they took it meanwhile: None) and it counts as a no-answer. True with it when
        that makes `limit` misses in a row (0: no limit): the member is to be set away."""
        offer = await self._session.get(QueueOffer, offer_id, populate_existing=True)
        if offer is None or offer.ended_at is not None or offer.agent_id is None:
            return None
        # Guarded like an accept: an Accept that won a moment ago keeps the card.
        freed = (await self._session.execute(
            update(Handoff).where(Handoff.id == offer.handoff_id,
                                  Handoff.state == HandoffState.OFFERED,
                                  Handoff.target_agent_id == offer.agent_id)
            .values(target_agent_id=None, version=Handoff.version + 1)
            .returning(Handoff.id))).one_or_none()
        if freed is None:
            return None
        offer.ended_at, offer.outcome = self._clock(), OfferOutcome.NO_ANSWER
        await self._session.flush()
        away = bool(limit) and await self.misses_in_a_row(offer.agent_id) >= limit
        if away:
            offer.set_away = True
            await self._session.flush()
        return offer, away

    async def misses_in_a_row(self, agent_id: int) -> int:
        """The member's no-answers since their last accepted card (any queue's, or
        none) and since they were last set away for missing."""
        since = await self._session.scalar(
            select(func.max(Handoff.accepted_at)).where(Handoff.accepted_by == agent_id))
        query = (select(QueueOffer.outcome, QueueOffer.set_away)
                 .where(QueueOffer.agent_id == agent_id, QueueOffer.ended_at.is_not(None))
                 .order_by(QueueOffer.id.desc()))
        if since is not None:
            query = query.where(QueueOffer.offered_at > _aware(since))
        count = 0
        for outcome, set_away in await self._session.execute(query):
            if outcome is OfferOutcome.WITHDRAWN:
                continue  # the caller left while it rang: neither a miss nor an answer
            if outcome is not OfferOutcome.NO_ANSWER or set_away:
                break  # taken, or the miss that ended the last run (set away for it)
            count += 1
        return count

    async def close_offers(self, handoff_id: int, outcome: OfferOutcome) -> None:
        """The card was taken, or left the queue: its open offer ends with it."""
        await self._session.execute(
            update(QueueOffer).where(QueueOffer.handoff_id == handoff_id,
                                     QueueOffer.ended_at.is_(None))
            .values(ended_at=self._clock(), outcome=outcome))

    async def offers(self, queue_id: int) -> Sequence[QueueOffer]:
        return (await self._session.scalars(
            select(QueueOffer).where(QueueOffer.queue_id == queue_id).order_by(QueueOffer.id),
            execution_options={"populate_existing": True})).all()

    # ---- figures -------------------------------------------------------------------------

    async def stats(self, queue_id: int, *, since: datetime | None = None) -> QueueStats:
        """The queue's figures; `since`: over the cards queued from that moment on only
        (the wallboard's "today", from the site's midnight)."""
        queue = await self.get(queue_id)
        query = select(Handoff).where(Handoff.queue_id == queue_id)
        offers = select(func.count()).select_from(QueueOffer).where(
            QueueOffer.queue_id == queue_id, QueueOffer.outcome == OfferOutcome.NO_ANSWER)
        if since is not None:
            query = query.where(Handoff.requested_at >= since)
            offers = offers.where(QueueOffer.offered_at >= since)
        handoffs = (await self._session.scalars(query)).all()
        no_answers = await self._session.scalar(offers) or 0
        return queue_stats(handoffs, queue.service_level_s, no_answers=int(no_answers))


def queue_stats(handoffs: Sequence[Handoff], service_level_s: int, *,
                no_answers: int = 0) -> QueueStats:
    """A queue's figures over its cards `handoffs`: the wallboard's today and the KPI
    page's range (handoff.store.kpis_repo) count them the same way."""
    waits = [(h.accepted_at - h.requested_at).total_seconds()
             for h in handoffs if h.accepted_at is not None]
    over = [h for h in handoffs if h.accepted_at is None
            and HANDOFF_LIFECYCLE.is_terminal(h.state)]
    return QueueStats(
        entered=len(handoffs), answered=len(waits),
        within_service_level=sum(within_service_level(w, service_level_s) for w in waits),
        not_answered=len(over), waiting=len(handoffs) - len(waits) - len(over),
        no_answers=no_answers,
        average_wait_s=sum(waits) / len(waits) if waits else None)


def _aware(value: Any) -> datetime | None:
    """An aggregate (max) as a UTC datetime: it comes back as the database gives it,
    not through the column's own conversion (SQLite gives text, or a naive value)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
