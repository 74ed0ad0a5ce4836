"""The key figures (handoff.kpis) read from the store: the one function the KPI page,
its CSV export and /metrics all call, so the three never disagree."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, tzinfo

from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.agents import AgentState
from handoff.calls import CallDirection, CallOutcome
from handoff.handoffs import HandoffState
from handoff.kpis import AgentFigures, KpiFilter, Kpis, QueueFigures, StateChange, state_spans
from handoff.store.models import (
    Agent,
    AgentStateChange,
    Call,
    Handoff,
    PauseReason,
    QueueRecord,
)
from handoff.store.queues_repo import queue_stats
from handoff.store.transitions import Clock


class KpisRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def figures(self, where: KpiFilter, zone: tzinfo) -> Kpis:
        """The figures over [where.since, where.until); `zone`: the site's, whose hours
        the per-hour requests are counted in."""
        calls, contained = await self._containment(where)
        handoffs = await self._handoffs(where)
        first = [h for h in handoffs if h.attempt == 1]
        per_hour = [0] * 24
        for handoff in first:
            per_hour[handoff.requested_at.astimezone(zone).hour] += 1
        return Kpis(
            where=where, calls=calls, contained=contained, requests=len(first),
            reasons=await self._reasons(where),
            accept_waits_s=sorted((h.accepted_at - h.offered_at).total_seconds()
                                  for h in handoffs if h.offered_at and h.accepted_at),
            abandoned=sum(1 for h in handoffs if h.state is HandoffState.ABANDONED),
            queues=await self._queues(handoffs),
            agents=await self._agents(where, handoffs),
            requests_per_hour=per_hour,
        )

    # ---- calls ---------------------------------------------------------------------------

    async def _containment(self, where: KpiFilter) -> tuple[int, int]:
        # A person was put through at some point: the call was not the AI's alone, even
        # if it went back to the AI and the AI ended it.
        reached_a_person = exists().where(Handoff.call_id == Call.id,
                                          Handoff.connected_at.is_not(None))
        contained = case((and_(Call.outcome == CallOutcome.COMPLETED_BY_AI,
                               ~reached_a_person), 1), else_=0)
        query = select(func.count(), func.coalesce(func.sum(contained), 0)).where(
            Call.direction == CallDirection.INBOUND, Call.outcome.is_not(None),
            Call.started_at >= where.since, Call.started_at < where.until)
        if where.assistant_id is not None:
            query = query.where(Call.assistant_id == where.assistant_id)
        total, resolved = (await self._session.execute(query)).one()
        return int(total), int(resolved)

    # ---- handoffs ------------------------------------------------------------------------

    def _handoff_scope(self, where: KpiFilter) -> list[ColumnElement[bool]]:
        scope = [Handoff.requested_at >= where.since, Handoff.requested_at < where.until]
        if where.assistant_id is not None:
            scope.append(Handoff.call_id.in_(
                select(Call.id).where(Call.assistant_id == where.assistant_id)))
        if where.queue_id is not None:
            scope.append(Handoff.queue_id == where.queue_id)
        if where.agent_id is not None:
            scope.append(Handoff.accepted_by == where.agent_id)
        return scope

    async def _handoffs(self, where: KpiFilter) -> Sequence[Handoff]:
        return (await self._session.scalars(
            select(Handoff).where(*self._handoff_scope(where)).order_by(Handoff.id))).all()

    async def _reasons(self, where: KpiFilter) -> list[tuple[str, int]]:
        rows = await self._session.execute(
            select(Handoff.reason, func.count()).where(
                *self._handoff_scope(where), Handoff.attempt == 1)
            .group_by(Handoff.reason))
        return sorted(((str(reason), int(n)) for reason, n in rows),
                      key=lambda item: (-item[1], item[0]))

    async def _queues(self, handoffs: Sequence[Handoff]) -> list[QueueFigures]:
        by_queue: dict[int, list[Handoff]] = defaultdict(list)
        for handoff in handoffs:
            if handoff.queue_id is not None:
                by_queue[handoff.queue_id].append(handoff)
        if not by_queue:
            return []
        queues = (await self._session.scalars(
            select(QueueRecord).where(QueueRecord.id.in_(by_queue))
            .order_by(QueueRecord.name))).all()
        figures = []
        for queue in queues:
            stats = queue_stats(by_queue[queue.id], queue.service_level_s)
            figures.append(QueueFigures(queue.id, queue.name, queue.service_level_s,
                                        stats.answered, stats.within_service_level,
                                        stats.not_answered))
        return figures

    # ---- agents --------------------------------------------------------------------------

    async def _agents(self, where: KpiFilter,
                      handoffs: Sequence[Handoff]) -> list[AgentFigures]:
        handled: Counter[int] = Counter()
        talk: dict[int, float] = defaultdict(float)
        for handoff in handoffs:
            if handoff.accepted_by is None or handoff.connected_at is None:
                continue
            handled[handoff.accepted_by] += 1
            if handoff.ended_at is not None:
                talk[handoff.accepted_by] += (
                    handoff.ended_at - handoff.connected_at).total_seconds()
        # Time is counted up to now: the rest of today has not been spent yet.
        until = min(where.until, self._clock())
        spans = await self._state_spans(where, until)
        # Under an assistant or queue filter, the agents who took its calls; otherwise
        # also those who were on duty without taking one (not everyone who was ever
        # off duty before the range began).
        ids = set(handled)
        if where.assistant_id is None and where.queue_id is None:
            ids |= {agent_id for agent_id, spent in spans.items()
                    if any(state is not AgentState.OFF_DUTY for state, _ in spent)}
        if where.agent_id is not None:
            ids &= {where.agent_id}
        if not ids:
            return []
        names = {agent.id: agent.display_name for agent in (await self._session.scalars(
            select(Agent).where(Agent.id.in_(ids)))).all()}
        reasons = {reason.id: reason.name for reason in (await self._session.scalars(
            select(PauseReason))).all()}
        figures = []
        for agent_id in ids:
            spent = spans.get(agent_id, {})
            pauses: dict[str, float] = {}
            for (state, reason_id), seconds in spent.items():
                if state is AgentState.AWAY:
                    name = reasons.get(reason_id, "") if reason_id is not None else ""
                    pauses[name] = pauses.get(name, 0.0) + seconds
            figures.append(AgentFigures(
                agent_id, names.get(agent_id, f"#{agent_id}"), handled[agent_id],
                talk[agent_id],
                sum(s for (state, _), s in spent.items() if state is AgentState.WRAP_UP),
                pauses))
        return sorted(figures, key=lambda a: (a.name.casefold(), a.agent_id))

    async def _state_spans(self, where: KpiFilter, until: datetime) -> dict[
            int, dict[tuple[AgentState, int | None], float]]:
        """Each agent's time per (state, pause reason) in the range: the changes in it,
        and the last one before it (the state the range opened in). An agent's changes
        are numbered in the order they were made: each is a guarded write of their row,
        so the next waits for the one before to commit."""
        in_range = select(AgentStateChange).where(
            AgentStateChange.at >= where.since, AgentStateChange.at < until)
        opening = select(AgentStateChange).where(AgentStateChange.id.in_(
            select(func.max(AgentStateChange.id)).where(AgentStateChange.at < where.since)
            .group_by(AgentStateChange.agent_id)))
        if where.agent_id is not None:
            in_range = in_range.where(AgentStateChange.agent_id == where.agent_id)
            opening = opening.where(AgentStateChange.agent_id == where.agent_id)
        changes: dict[int, list[StateChange]] = defaultdict(list)
        for query in (opening, in_range):
            for row in (await self._session.scalars(query)).all():
                changes[row.agent_id].append(
                    StateChange(row.at, AgentState(row.state), row.pause_reason_id))
        return {agent_id: state_spans(rows, where.since, until)
                for agent_id, rows in changes.items()}
