"""Handoffs: one row per attempt to move a live call to an agent, guarded per state."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.agents import Presence
from handoff.handoffs import HANDOFF_LIFECYCLE, FailureReason, HandoffEvent, HandoffState
from handoff.queues import OfferOutcome, Strategy
from handoff.store.agents_repo import busy_agents_query
from handoff.store.errors import AgentBusy, AlreadyTaken, NotFound, NotOfferable, OffDuty
from handoff.store.models import Agent, Handoff, QueueMember, QueueRecord
from handoff.store.one_call import OneCallUpdate
from handoff.store.queues_repo import QueuesRepo
from handoff.store.transitions import (
    Clock,
    record_transition,
    transition_in_place,
    update_row,
)

# Read from the lifecycle table rather than restated, so the accept guard follows it.
(_ACCEPT_FROM,) = HANDOFF_LIFECYCLE.sources_of(HandoffEvent.ACCEPT)
_ACCEPT_TO = HANDOFF_LIFECYCLE.next_state(_ACCEPT_FROM, HandoffEvent.ACCEPT)

# The failure reason a terminal state implies when the event itself says why.
_IMPLIED_REASON = {
    HandoffState.ABANDONED: FailureReason.CALLER_HUNG_UP,
    HandoffState.TIMED_OUT: FailureReason.TIMEOUT,
}
_FAILURE_STATES = frozenset({*_IMPLIED_REASON, HandoffState.FAILED})


class HandoffsRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        # A queued card's offers end with it (taken, or gone otherwise).
        self._queues = QueuesRepo(session, clock)

    async def request(
        self,
        call_id: str,
        *,
        reason: str,
        topic: str | None = None,
        priority: int = 0,
        summary: str | None = None,
        note: str | None = None,
        target_agent_id: int | None = None,
        attempt: int = 1,
        queue_id: int | None = None,
    ) -> Handoff:
        handoff = Handoff(
            call_id=call_id,
            state=HANDOFF_LIFECYCLE.initial,
            reason=reason,
            topic=topic,
            priority=priority,
            summary=summary,
            note=note,
            target_agent_id=target_agent_id,
            requested_at=self._clock(),
            attempt=attempt,
            version=1,
            queue_id=queue_id,
        )
        self._session.add(handoff)
        await self._session.flush()
        return handoff

    async def assign(
        self, call_id: str, agent_id: int, *, reason: str, summary: str, attempt: int = 1,
        agent_channel_id: str | None = None,
    ) -> Handoff:
        """A handoff given straight to one agent, with no card on offer (a supervisor's
        take-over, an agent's call-back): through the lifecycle's own steps, recorded
        like any other, up to `connecting` (the agent's leg, when known, rings)."""
        handoff = await self.request(call_id, reason=reason, summary=summary,
                                     target_agent_id=agent_id, attempt=attempt)
        await self.apply(handoff.id, HandoffEvent.OFFER)
        # A supervisor takes over, an agent calls back: neither needs to be on duty.
        await self.accept(handoff.id, agent_id, on_duty_only=False)
        return await self.apply(handoff.id, HandoffEvent.DIAL_AGENT,
                                agent_channel_id=agent_channel_id)

    async def get(self, handoff_id: int) -> Handoff:
        handoff = await self._session.get(Handoff, handoff_id, populate_existing=True)
        if handoff is None:
            raise NotFound("handoff", handoff_id)
        return handoff

    async def accept(
        self, handoff_id: int, agent_id: int, *, on_duty_only: bool = True
    ) -> Handoff:
        """Give the handoff to `agent_id` if it is still on offer; exactly one agent wins.

        One conditional UPDATE decides, in the database, never in process memory: with
        several web workers and controller processes, two Accept clicks can arrive at
        two processes in the same millisecond. Whoever's UPDATE matches the `offered`
        row first wins; the database re-checks the guard for the second one after the
        first commits, so it matches nothing.

        The agent is part of the same guard. They must not be busy: on a call, or with
        one being set up (a second accept would ring their phone's second line while
        they talk to the first caller). For a card on offer (unless `on_duty_only` is
        off, for handoffs assigned to one person: a take-over, a call-back made from
        wrap-up) they must also be on duty and not in wrap-up: an Accept sent by a tab
        that has not heard yet of its agent's change loses, with no separate read first.
        """
        now = self._clock()
        # The same agent may accept two cards at once (two tabs, the socket and a POST):
        # the two UPDATEs touch different handoff rows, so nothing in them would make
        # the second wait for the first and see it. On PostgreSQL, writing the agent's
        # own row first does: the second transaction waits on that row lock until the
        # first commits, and its next statement reads afresh. SQLite needs no such write:
        # the handoff's UPDATE below, the transaction's first statement, takes the
        # database's write lock before it reads anything, so the second accept's UPDATE
        # waits for the first's commit and then sees its agent busy. Skipping it there
        # takes a statement (three round trips to the driver's thread) off the path an
        # open line's Accept waits on before the caller hears the agent.
        if self._session.get_bind().dialect.name != "sqlite":
            await self._session.execute(
                update(Agent).where(Agent.id == agent_id).values(on_duty=Agent.on_duty)
            )
        won = await _accept_statement(on_duty_only).first(
            self._session, {"agent_id": agent_id, "handoff_id": handoff_id, "now": now})
        if won is not None:
            record_transition(
                self._session, HANDOFF_LIFECYCLE, _ACCEPT_FROM, HandoffEvent.ACCEPT,
                _ACCEPT_TO, call_id=won.call_id, handoff_id=handoff_id, at=now,
            )
            if won.queue_id is not None:
                await self._queues.close_offers(handoff_id, OfferOutcome.ACCEPTED)
            return won
        raise await self._why_not_accepted(handoff_id, agent_id, on_duty_only)

    async def _why_not_accepted(
        self, handoff_id: int, agent_id: int, on_duty_only: bool
    ) -> Exception:
        """What made an accept's UPDATE match nothing: the card, or else the agent."""
        lost = (
            await self._session.execute(
                select(Handoff.state, Handoff.accepted_by, Handoff.target_agent_id,
                       Handoff.queue_id).where(Handoff.id == handoff_id)
            )
        ).one_or_none()
        if lost is None:
            return NotFound("handoff", handoff_id)
        if lost.accepted_by is not None:
            return AlreadyTaken(handoff_id, lost.accepted_by, lost.state)
        if lost.state is not _ACCEPT_FROM:
            return NotOfferable(handoff_id, lost.state)
        if lost.target_agent_id not in (None, agent_id):
            return NotOfferable(
                handoff_id, lost.state, f"offered to agent {lost.target_agent_id} only"
            )
        if lost.target_agent_id is None and lost.queue_id is not None:
            queue = await self._queues.get(lost.queue_id)
            if queue.strategy.assigns:
                return NotOfferable(handoff_id, lost.state,
                                    f"queue {queue.name} gives it to one member at a time")
            if not await self._queues.is_member(queue.id, agent_id):
                return NotOfferable(handoff_id, lost.state,
                                    f"for the members of queue {queue.name}")
        agent = (
            await self._session.execute(
                select(Agent.on_duty, Agent.presence,
                       Agent.id.in_(busy_agents_query()).label("busy"))
                .where(Agent.id == agent_id)
            )
        ).one_or_none()
        if agent is None:
            return NotFound("agent", agent_id)
        if on_duty_only and not agent.on_duty:
            return OffDuty(handoff_id, agent_id)
        if agent.busy:
            return AgentBusy(handoff_id, agent_id, "on a call")
        return AgentBusy(handoff_id, agent_id, "in wrap-up")

    async def apply(
        self,
        handoff_id: int,
        event: HandoffEvent,
        *,
        failure_reason: FailureReason | None = None,
        agent_channel_id: str | None = None,
        media_at: datetime | None = None,
        seen: HandoffState | None = None,
    ) -> Handoff:
        """Any lifecycle event except ACCEPT (see `accept`), guarded by the state it
        leaves (handoff.store.transitions.transition_in_place).

        FAIL needs a `failure_reason`; CALLER_HUNG_UP and TIME_OUT imply theirs. The
        agent's leg (as it is rung) and when its audio first reached Asterisk (as it
        connects) are kept when given: the handoff's quality record. `seen`: the state
        this transaction read the handoff in, for an event allowed from several (it saves
        reading it again; a handoff that moved on since is read and judged afresh).
        """
        if event is HandoffEvent.ACCEPT:
            raise ValueError("accept a handoff with accept(), which names the agent")
        now = self._clock()

        async def read() -> HandoffState | None:
            return await self._session.scalar(_STATE_OF_HANDOFF, {"id": handoff_id})

        async def write(source: HandoffState, target: HandoffState) -> Handoff | None:
            changes = _changes(target, failure_reason, now)
            if agent_channel_id is not None:
                changes["agent_channel_id"] = agent_channel_id
            if media_at is not None:
                changes["media_at"] = media_at
            return await update_row(self._session, Handoff, handoff_id,
                                    {"state": target, **changes}, source)

        handoff = await transition_in_place(
            self._session, HANDOFF_LIFECYCLE, event, kind="handoff", key=handoff_id,
            seen=seen, read=read, write=write, call_of=lambda h: h.call_id,
            handoff_id=handoff_id, at=now,
        )
        if handoff.queue_id is not None and HANDOFF_LIFECYCLE.is_terminal(handoff.state):
            await self._queues.close_offers(handoff_id, OfferOutcome.WITHDRAWN)
        return handoff

    async def open_for_call(self, call_id: str) -> Sequence[Handoff]:
        result = await self._session.scalars(
            select(Handoff)
            .where(Handoff.call_id == call_id, Handoff.state.not_in(HANDOFF_LIFECYCLE.terminal))
            .order_by(Handoff.id),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def open_handoffs(self) -> Sequence[Handoff]:
        """Every unfinished handoff, for reconciliation after a restart."""
        result = await self._session.scalars(
            select(Handoff)
            .where(Handoff.state.not_in(HANDOFF_LIFECYCLE.terminal))
            .order_by(Handoff.id),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def offered(self) -> Sequence[Handoff]:
        """The cards on the dashboards: most urgent first, then the longest waiting."""
        result = await self._session.scalars(
            select(Handoff)
            .where(Handoff.state == HandoffState.OFFERED)
            .order_by(Handoff.priority.desc(), Handoff.requested_at, Handoff.id),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def for_call(self, call_id: str) -> Sequence[Handoff]:
        """Every attempt for the call, in order (history and contact pages)."""
        result = await self._session.scalars(
            select(Handoff).where(Handoff.call_id == call_id).order_by(Handoff.id),
            execution_options={"populate_existing": True},
        )
        return result.all()


# A step's read of where the handoff stands when its UPDATE cannot tell (see apply),
# built once.
_STATE_OF_HANDOFF = select(Handoff.state).where(Handoff.id == bindparam("id", type_=Integer))


@functools.cache
def _accept_statement(on_duty_only: bool) -> OneCallUpdate[Handoff]:
    """The accept's conditional UPDATE (see HandoffsRepo.accept), built once per kind
    with its values as parameters: building it (subqueries, an alias) cost the Python
    side milliseconds per Accept, spent before an open line can move while the caller
    waits; built once, each Accept only binds its agent, card and time, and on SQLite
    it is one call to the driver (handoff.store.one_call).
    """
    agent_id = bindparam("agent_id", type_=Integer)
    able = [Agent.id == agent_id, Agent.id.not_in(busy_agents_query())]
    if on_duty_only:
        able += [Agent.on_duty.is_(True), Agent.presence != Presence.WRAP_UP]
    guard = [
        Handoff.id == bindparam("handoff_id", type_=Integer),
        Handoff.state == _ACCEPT_FROM,
        # A transfer card, or a queue's card assigned to one member, names one agent;
        # others cannot take it. A queue's card for everyone is its members' (an
        # offer_all queue's); one waiting for its next member is nobody's yet.
        or_(Handoff.target_agent_id == agent_id,
            and_(Handoff.target_agent_id.is_(None),
                 or_(Handoff.queue_id.is_(None), _offered_to_members(agent_id)))),
        exists().where(*able),
    ]
    return OneCallUpdate(
        update(Handoff)
        .where(*guard)
        .values(
            state=_ACCEPT_TO,
            accepted_by=agent_id,
            accepted_at=bindparam("now", type_=Handoff.__table__.c.accepted_at.type),
            version=Handoff.version + 1,
        )
        .returning(Handoff),
        Handoff,
    )


def _offered_to_members(agent_id: Any) -> Any:
    """The handoff's queue offers its cards to every member, and the agent is one."""
    return and_(
        exists().where(QueueRecord.id == Handoff.queue_id,
                       QueueRecord.strategy == Strategy.OFFER_ALL),
        exists().where(QueueMember.queue_id == Handoff.queue_id,
                       QueueMember.agent_id == agent_id),
    )


def _changes(
    target: HandoffState, failure_reason: FailureReason | None, now: datetime
) -> dict[str, object]:
    if failure_reason is not None and target not in _FAILURE_STATES:
        raise ValueError(f"a failure reason makes no sense for a handoff going {target.value}")
    if target is HandoffState.OFFERED:
        return {"offered_at": now}
    if target is HandoffState.CONNECTED:
        return {"connected_at": now}
    if not HANDOFF_LIFECYCLE.is_terminal(target):
        return {}
    reason = failure_reason or _IMPLIED_REASON.get(target)
    if target is HandoffState.FAILED and reason is None:
        raise ValueError("a failed handoff needs a failure reason")
    return {"ended_at": now, "failure_reason": reason}
