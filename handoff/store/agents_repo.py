"""Agents: accounts, SIP credentials, duty and presence, and who is free to take a card."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from handoff.agents import AgentRole, EndpointKind, Presence
from handoff.handoffs import AGENT_BUSY_STATES
from handoff.store.errors import NotFound
from handoff.store.models import Agent, Handoff


class AgentsRepo:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

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

    async def by_login(self, login: str) -> Agent | None:
        return await self._one_or_none(select(Agent).where(Agent.login == login))

    async def by_sip_user(self, sip_user: str) -> Agent | None:
        return await self._one_or_none(select(Agent).where(Agent.sip_user == sip_user))

    async def all(self) -> Sequence[Agent]:
        result = await self._session.scalars(
            select(Agent).order_by(Agent.id), execution_options={"populate_existing": True}
        )
        return result.all()

    async def set_duty(self, agent_id: int, on_duty: bool) -> Agent:
        return await self._update(agent_id, on_duty=on_duty)

    async def set_presence(self, agent_id: int, presence: Presence) -> Agent:
        return await self._update(agent_id, presence=presence)

    async def set_password_hash(self, agent_id: int, password_hash: str | None) -> Agent:
        return await self._update(agent_id, password_hash=password_hash)

    async def set_role(self, agent_id: int, role: AgentRole) -> Agent:
        return await self._update(agent_id, role=role)

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
            select(Agent)
            .where(
                Agent.on_duty.is_(True),
                Agent.presence == Presence.AVAILABLE,
                Agent.id.not_in(busy_agents_query()),
            )
            .order_by(Agent.id),
            execution_options={"populate_existing": True},
        )
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


def busy_agents_query() -> Select[int | None]:
    """Agents who accepted a handoff that is not over: on, or joining, a call.

    Over an alias of the handoffs table, so that it stays a self-contained subquery
    inside a statement on handoffs (the accept's UPDATE) instead of correlating with it.
    """
    handoff = aliased(Handoff)
    return select(handoff.accepted_by).where(
        handoff.state.in_(AGENT_BUSY_STATES), handoff.accepted_by.is_not(None)
    )
