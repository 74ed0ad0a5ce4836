"""Agents whose phone cannot ring stop getting calls.

An agent who closes the browser without going off duty, or whose desk phone is
unplugged, still looks available: every caller handed over waits on a card nobody will
take, and a supervisor sees a team larger than it is. The PBX knows better (the phone's
registration). Every ``every_s`` the watch asks it about each available agent; one whose
phone has been unregistered at ``grace_checks`` checks in a row is set away, with a line
in the audit log, and their desk and the supervisors see it at once. The grace lets a
browser reload (the phone re-registers within a second or two) go unnoticed. Coming back
is the agent's own choice: they set themselves available again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from handoff.agents import CONTROLLER, PresenceEvent
from handoff.events import AGENTS_TOPIC, AgentChanged, EventHub
from handoff.store import Store
from handoff.store.models import Agent

log = logging.getLogger(__name__)


class PhoneWatch:
    def __init__(
        self,
        store: Store,
        events: EventHub,
        phone_registered: Callable[[str], Awaitable[bool | None]],
        *,
        every_s: float = 10.0,
        grace_checks: int = 2,
    ) -> None:
        self._store = store
        self._events = events
        self._phone_registered = phone_registered
        self.every_s = every_s
        self._grace_checks = grace_checks
        self._unregistered: dict[int, int] = {}  # agent id -> checks in a row

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.check_once()
            except Exception:
                # The database or the PBX is away for a moment: nobody is set away
                # on a guess; the next check tries again.
                log.exception("the phone check failed; retrying in %.0f s", self.every_s)

    async def check_once(self) -> list[int]:
        """One round: returns the agents set away."""
        async with self._store.transaction() as tx:
            available = list(await tx.agents.available())
        due = []
        for agent in available:
            # Only a definite "not registered" counts; "cannot tell" resets nothing.
            registered = await self._phone_registered(agent.sip_user)
            if registered is None:
                continue
            if registered:
                self._unregistered.pop(agent.id, None)
                continue
            checks = self._unregistered.get(agent.id, 0) + 1
            self._unregistered[agent.id] = checks
            if checks >= self._grace_checks:
                due.append(agent)
        still = {agent.id for agent in available}
        for agent_id in list(self._unregistered):
            if agent_id not in still:  # off duty, away or on a call meanwhile
                del self._unregistered[agent_id]
        return [agent.id for agent in due if await self._set_away(agent)]

    async def _set_away(self, agent: Agent) -> bool:
        self._unregistered.pop(agent.id, None)
        async with self._store.transaction() as tx:
            # Refused if the agent went off duty or away by themselves since the read.
            change = await tx.agents.try_change_presence(
                agent.id, PresenceEvent.PHONE_LOST, actor=CONTROLLER,
                why="phone_unregistered", sip_user=agent.sip_user)
        if change is None:
            return False
        log.warning("agent %s set away: their phone (%s) is not registered with the PBX",
                    agent.login, agent.sip_user)
        self._events.publish(AGENTS_TOPIC, AgentChanged(agent.id))
        return True
