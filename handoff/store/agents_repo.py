"""Agents: accounts, SIP credentials, duty and presence, and who is free to take a card."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from handoff.agents import (
    CONTROLLER,
    PRESENCE,
    AgentRole,
    EndpointKind,
    Presence,
    PresenceEvent,
    agent_state,
    audit_action,
    choice_event,
    duty_event,
    is_on_duty,
)
from handoff.handoffs import AGENT_BUSY_STATES
from handoff.states import InvalidTransition
from handoff.store.audit_repo import AuditRepo
from handoff.store.errors import LastAdmin, NotFound, Removed
from handoff.store.models import Agent, AgentStateChange, Handoff, PauseReason
from handoff.store.transitions import Clock, apply_under_guard, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PresenceChange:
    agent: Agent  # the row as written (or as found, when the event changed nothing)
    was: Presence
    event: PresenceEvent
    now: Presence

    @property
    def changed(self) -> bool:
        return self.now is not self.was


class AgentsRepo:
    def __init__(self, session: AsyncSession, audit: AuditRepo, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock
        # Every duty or presence change leaves a line, in the same transaction.
        self._audit = audit

    async def create(
        self,
        *,
        login: str,
        display_name: str,
        sip_user: str,
        sip_password: str,
        role: AgentRole = AgentRole.AGENT,
        endpoint_kind: EndpointKind = EndpointKind.WEBRTC,
        skills: Iterable[str] = (),
        password_hash: str | None = None,
        seat: str | None = None,
        takes_calls: bool = True,
    ) -> Agent:
        agent = Agent(
            login=login,
            display_name=display_name,
            sip_user=sip_user,
            sip_password=sip_password,
            role=role,
            endpoint_kind=endpoint_kind,
            skills=list(skills),
            password_hash=password_hash,
            seat=seat,
            takes_calls=takes_calls,
            on_duty=False,
            presence=Presence.OFFLINE,
        )
        self._session.add(agent)
        await self._session.flush()
        return agent

    async def get(self, agent_id: int) -> Agent:
        agent = await self._session.get(Agent, agent_id, populate_existing=True)
        if agent is None:
            raise NotFound("agent", agent_id)
        return agent

    async def of_ids(self, agent_ids: Sequence[int]) -> list[Agent]:
        """The agents of ``agent_ids`` that exist, in that order, read in one statement
        (a card's likely agents are read together, not one round trip each)."""
        if not agent_ids:
            return []
        result = await self._session.scalars(
            select(Agent).where(Agent.id.in_(agent_ids)),
            execution_options={"populate_existing": True},
        )
        found = {agent.id: agent for agent in result}
        return [found[agent_id] for agent_id in agent_ids if agent_id in found]

    async def by_login(self, login: str) -> Agent | None:
        return await self._one_or_none(select(Agent).where(Agent.login == login))

    async def by_sip_user(self, sip_user: str) -> Agent | None:
        return await self._one_or_none(select(Agent).where(Agent.sip_user == sip_user))

    async def all(self, *, include_removed: bool = False) -> Sequence[Agent]:
        """Everyone on the lists; with include_removed, also the removed people whose
        names history still shows."""
        query = select(Agent).order_by(Agent.id)
        if not include_removed:
            query = query.where(Agent.removed_at.is_(None))
        result = await self._session.scalars(
            query, execution_options={"populate_existing": True}
        )
        return result.all()

    async def disable(self, agent_id: int, *, actor: str) -> Agent:
        """No sign-in, no card, no SIP endpoint from now on; off duty at once.

        The caller ends the person's sessions in the same transaction and has the PBX
        re-render its endpoints. LastAdmin if nobody else could manage the installation.
        """
        agent = await self._live(agent_id)
        if not agent.enabled:
            return agent
        await self._refuse_last_admin(agent)
        await self.change_presence(agent_id, PresenceEvent.GO_OFF_DUTY, actor=actor,
                                   why="disabled")
        agent = await self._update(agent_id, disabled_at=utc_now())
        await self._audit.record(actor, "agent_disabled", f"agent:{agent_id}",
                                 {"login": agent.login})
        return agent

    async def enable(self, agent_id: int, *, actor: str) -> Agent:
        """Back in: they sign in and go on duty themselves (Removed for the removed)."""
        agent = await self._live(agent_id)
        if agent.enabled:
            return agent
        agent = await self._update(agent_id, disabled_at=None)
        await self._audit.record(actor, "agent_enabled", f"agent:{agent_id}",
                                 {"login": agent.login})
        return agent

    async def remove(self, agent_id: int, *, actor: str) -> Agent:
        """Disabled, and gone from the lists; the row stays so that their calls,
        handoffs, notes and audit lines keep their name. The login stays taken, so a
        name in the history never means two people."""
        agent = await self.disable(agent_id, actor=actor)
        agent = await self._update(agent_id, removed_at=utc_now())
        await self._audit.record(actor, "agent_removed", f"agent:{agent_id}",
                                 {"login": agent.login})
        return agent

    async def _live(self, agent_id: int) -> Agent:
        agent = await self.get(agent_id)
        if agent.removed_at is not None:
            raise Removed(agent_id)
        return agent

    async def _refuse_last_admin(self, agent: Agent) -> None:
        if agent.role is not AgentRole.ADMIN:
            return
        others = await self._session.scalar(
            select(func.count()).select_from(Agent).where(
                Agent.role == AgentRole.ADMIN, Agent.disabled_at.is_(None),
                Agent.id != agent.id,
            )
        )
        if not others:
            raise LastAdmin(agent.id)

    async def change_presence(
        self, agent_id: int, event: PresenceEvent, *, actor: str,
        pause_reason: PauseReason | None = None, **detail: Any
    ) -> PresenceChange:
        """Apply `event` to the agent's presence (and so their duty) in this transaction.

        The lifecycle (handoff.agents.PRESENCE) judges it against the presence the row
        has; the row is written only if it still has that presence, else the event is
        judged again against what the other writer left (the agent choosing away while
        their wrap-up ends, from another process). The change is logged
        `from -> event -> to` and audited under `actor` with `detail`. An event that
        leaves the presence as it is (going on duty twice) writes nothing. Raises
        InvalidTransition (nothing written) or NotFound.

        `pause_reason` goes with an agent's choice of away (ValueError with any other
        event); every other change clears the reason. Choosing another reason while away
        is a change too: a new pause, with its own start and audit line.
        """
        if pause_reason is not None and event is not PresenceEvent.CHOOSE_AWAY:
            raise ValueError(f"a pause reason goes with {PresenceEvent.CHOOSE_AWAY}")
        reason_id = None if pause_reason is None else pause_reason.id
        reason_changed = False

        async def write(current: Presence, target: Presence, agent: Agent) -> Agent | None:
            nonlocal reason_changed
            # Only a choice of away changes the reason: a second tab going on duty while
            # away leaves the pause as it is.
            reason_changed = (event is PresenceEvent.CHOOSE_AWAY
                              and agent.pause_reason_id != reason_id)
            if target is current and not reason_changed:
                return agent
            return (await self._session.scalars(
                update(Agent)
                .where(Agent.id == agent_id, Agent.presence == current)
                .values(presence=target, on_duty=is_on_duty(target),
                        pause_reason_id=reason_id, presence_since=self._clock())
                .returning(Agent),
                execution_options={"populate_existing": True},
            )).one_or_none()

        current, target, _, agent = await apply_under_guard(
            PRESENCE, event, kind="agent", key=agent_id,
            read=lambda: self._presence_of(agent_id), write=write)
        change = PresenceChange(agent, current, event, target)
        if not change.changed and not reason_changed:
            log.debug("presence agent=%s: %s -> %s changes nothing", agent_id,
                      current.value, event.value)
            return change
        PRESENCE.transition_of(current, event, subject=f"agent={agent_id}")
        # The floor's figures (time away per reason, time in wrap-up) are read from
        # these rows; written with the change, so a change never goes uncounted.
        self._session.add(AgentStateChange(
            agent_id=agent_id, at=change.agent.presence_since or self._clock(),
            state=agent_state(target, on_call=False).value, pause_reason_id=reason_id))
        if pause_reason is not None:
            # The name as it was chosen, and whether it counts as work: the floor's
            # figures read pauses from these lines.
            detail = {"pause_reason": pause_reason.name,
                      "productive": pause_reason.productive, **detail}
        await self._audit.record(actor, audit_action(event), f"agent:{agent_id}", {
            "from": current.value, "event": event.value, "presence": target.value,
            "on_duty": is_on_duty(target), **detail,
        })
        return change

    async def state_changes(self, agent_id: int) -> Sequence[AgentStateChange]:
        """The agent's state changes, oldest first (each lasts until the next)."""
        return (await self._session.scalars(
            select(AgentStateChange).where(AgentStateChange.agent_id == agent_id)
            .order_by(AgentStateChange.at, AgentStateChange.id))).all()

    async def _presence_of(self, agent_id: int) -> tuple[Presence, Agent] | None:
        """The presence the guarded write is judged against (and the row, read fresh)."""
        agent = await self._session.get(Agent, agent_id, populate_existing=True)
        return None if agent is None else (agent.presence, agent)

    async def try_change_presence(
        self, agent_id: int, event: PresenceEvent, *, actor: str, **detail: Any
    ) -> PresenceChange | None:
        """change_presence for the controller's own moves (wrap-up, a lost phone), which
        yield to whatever the agent chose: None when the lifecycle does not allow it now,
        or the agent is gone."""
        try:
            return await self.change_presence(agent_id, event, actor=actor, **detail)
        except (InvalidTransition, NotFound) as exc:
            log.debug("presence agent=%s: %s not applied (%s)", agent_id, event.value, exc)
            return None

    async def set_duty(
        self, agent_id: int, on_duty: bool, *, actor: str = CONTROLLER, **detail: Any
    ) -> Agent:
        """On or off duty (see change_presence): on duty from offline is available."""
        change = await self.change_presence(agent_id, duty_event(on_duty), actor=actor,
                                            **detail)
        return change.agent

    async def set_presence(
        self, agent_id: int, presence: Presence, *, actor: str = CONTROLLER,
        pause_reason: PauseReason | None = None, **detail: Any
    ) -> Agent:
        """The presence an agent on duty chose (see change_presence), away with a reason
        or without; "offline" is going off duty. InvalidTransition for any other choice
        off duty."""
        change = await self.change_presence(agent_id, choice_event(presence), actor=actor,
                                            pause_reason=pause_reason, **detail)
        return change.agent

    async def set_password_hash(self, agent_id: int, password_hash: str | None) -> Agent:
        return await self._update(agent_id, password_hash=password_hash)

    async def set_display_name(self, agent_id: int, display_name: str) -> Agent:
        return await self._update(agent_id, display_name=display_name)

    async def set_role(self, agent_id: int, role: AgentRole) -> Agent:
        return await self._update(agent_id, role=role)

    async def set_takes_calls(self, agent_id: int, takes_calls: bool, *, actor: str) -> Agent:
        """Whether the person takes calls; one who stops goes off duty with it, so no
        card is offered to a desk that has no duty switch any more."""
        agent = await self._update(agent_id, takes_calls=takes_calls)
        await self._audit.record(actor, "takes_calls_change", f"agent:{agent_id}",
                                 {"takes_calls": takes_calls})
        if not takes_calls and agent.on_duty:
            agent = await self.set_duty(agent_id, False, actor=actor, why="takes no calls")
        return agent

    async def set_open_line(self, agent_id: int, open_line: bool, *, actor: str) -> Agent:
        """Whether the person's desk phone keeps an open line on duty (from their next
        duty on; the line they have, or the ringing, stays as it is until then)."""
        agent = await self._update(agent_id, open_line=open_line)
        await self._audit.record(actor, "open_line_change", f"agent:{agent_id}",
                                 {"open_line": open_line})
        return agent

    async def hold_line(self, agent_id: int, node: str | None) -> None:
        """``node`` holds the agent's desk phone's open line now (None: no node does)."""
        await self._update(agent_id, line_node=node)

    async def drop_line(self, agent_id: int, node: str) -> None:
        """``node`` hung the agent's line up: no longer recorded, unless another node's
        line replaced it meanwhile."""
        await self._session.execute(update(Agent).where(
            Agent.id == agent_id, Agent.line_node == node).values(line_node=None))

    async def take_lines(self, lost: str, by: str) -> list[Agent]:
        """The desk phones whose open line node ``lost`` held, now ``by``'s: those of
        agents still on duty with an open line, to be called again. In the survivor's
        claim of the node (NodesRepo.claim_lost), so one survivor calls each phone."""
        held = list(await self._session.scalars(
            update(Agent).where(Agent.line_node == lost).values(line_node=None)
            .returning(Agent), execution_options={"populate_existing": True}))
        wanted = [agent for agent in held if agent.on_duty and agent.open_line
                  and agent.enabled and agent.endpoint_kind is EndpointKind.DESKPHONE]
        for agent in wanted:
            await self.hold_line(agent.id, by)
        return wanted

    async def busy_agent_ids(self) -> set[int]:
        """Agents who accepted a handoff that is not over: on, or joining, a call."""
        result = await self._session.scalars(busy_agents_query())
        return {agent_id for agent_id in result if agent_id is not None}

    async def available(self, skills: Iterable[str] = ()) -> Sequence[Agent]:
        """On duty, present, not busy, and holding every skill asked for.

        Whether the phone is registered is Asterisk's knowledge: handoff.phone_watch sets
        away the agents whose phone has been unregistered for a while.
        """
        wanted = set(skills)
        result = await self._session.scalars(
            _available_statement(), execution_options={"populate_existing": True})
        # Skills live in a JSON list whose operators differ between SQLite and
        # PostgreSQL; the on-duty set is small, so the subset test runs here.
        return [agent for agent in result if wanted <= set(agent.skills)]

    async def _update(self, agent_id: int, **values: object) -> Agent:
        agent = (
            await self._session.scalars(
                update(Agent).where(Agent.id == agent_id).values(**values).returning(Agent),
                execution_options={"populate_existing": True},
            )
        ).one_or_none()
        if agent is None:
            raise NotFound("agent", agent_id)
        return agent

    async def _one_or_none(self, query: Select[Agent]) -> Agent | None:
        result = await self._session.scalars(
            query, execution_options={"populate_existing": True}
        )
        return result.one_or_none()


@functools.cache
def _available_statement() -> Select[Agent]:
    """Who may be offered a card (see AgentsRepo.available), built once: every card asks
    it, and building it (the busy agents' subquery) and keying SQLAlchemy's statement
    cache on the fresh object cost more than running it."""
    return (
        select(Agent)
        .where(
            Agent.on_duty.is_(True),
            Agent.presence == Presence.AVAILABLE,
            # Disabling takes them off duty too; this holds against a racing Accept.
            Agent.disabled_at.is_(None),
            Agent.id.not_in(busy_agents_query()),
        )
        .order_by(Agent.id)
    )


@functools.cache
def busy_agents_query() -> Select[int | None]:
    """Agents who accepted a handoff that is not over: on, or joining, a call.

    Over an alias of the handoffs table, so that it stays a self-contained subquery
    inside a statement on handoffs (the accept's UPDATE) instead of correlating with it.
    Built once (statements are immutable, so every user may share it): the alias alone
    costs more to make than the query takes to run.
    """
    handoff = aliased(Handoff)
    return select(handoff.accepted_by).where(
        handoff.state.in_(AGENT_BUSY_STATES), handoff.accepted_by.is_not(None)
    )
