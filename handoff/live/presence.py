"""What the live calls change about agents: wrap-up after their part of a call, and
whether their phone can ring at all (asked of the PBX)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from handoff.agents import CONTROLLER, PresenceEvent
from handoff.events import AGENTS_TOPIC, AgentChanged
from handoff.live.flow import Flow
from handoff.live.reconcile import pbx_started
from handoff.store.models import Handoff
from handoff.store.transitions import utc_now
from pbx.ari import AriError, AriNotFound

log = logging.getLogger(__name__)

# After an Asterisk restart a desk phone's binding is back (it lives in Asterisk's
# database), but its endpoint reads offline until the PBX's first OPTIONS to it, up to
# qualify_frequency later (30 s, deskphone-aor in pjsip.conf.j2). Until then "offline"
# says nothing about the phone.
FIRST_QUALIFY_S = 30.0


class Presence(Flow):
    async def phone_registered(self, sip_user: str) -> bool | None:
        """Whether the agent's phone is registered and answering with the PBX (its PJSIP
        endpoint is online); None when the PBX cannot say right now."""
        try:
            # An agent waits on this to go on duty: a PBX slow to answer does not hold
            # them up (nor does it count against them).
            async with asyncio.timeout(2.0):
                endpoint = await self.ari.endpoints.get("PJSIP", sip_user)
                if endpoint.get("state") == "online":
                    return True
                info = await self.ari.asterisk.info()
        except AriNotFound:
            return False
        except (AriError, TimeoutError) as exc:
            log.warning("could not ask the PBX about %s's phone: %r", sip_user, exc)
            return None
        started = pbx_started(info)
        if started is not None and (utc_now() - started).total_seconds() < FIRST_QUALIFY_S:
            return None
        return False

    def wrap_up(self, agent_id: int | None, ended: Handoff | None = None) -> None:
        """The agent's part of a call is over: a short wrap-up before the next card.
        `ended`: the handoff whose part just ended, when the caller has it in hand (its
        queue sets the limit); without it the agent's last call is looked up."""
        if agent_id is not None:
            self.ctl.spawn(self._wrap_up_then_available(agent_id, ended),
                           f"wrap-up agent={agent_id}")

    async def _wrap_up_then_available(self, agent_id: int, ended: Handoff | None) -> None:
        # After-call work differs by the queue's work (a sale's order form, a support
        # ticket): the limit is the one of the queue the call came from, else the site's.
        queue = None
        queue_id = None if ended is None else ended.queue_id
        if ended is None or queue_id is not None:
            async with self.store.transaction() as tx:
                queue = (await tx.queues.get(queue_id) if queue_id is not None
                         else await tx.queues.of_last_call(agent_id))
        limit = (float(queue.wrap_up_s) if queue is not None and queue.wrap_up_s is not None
                 else self.timing.wrap_up_s)
        if limit <= 0:
            return
        # The lifecycle (handoff.agents.PRESENCE) lets the wrap-up begin only from
        # available, and end only if the agent is still in it: whatever they chose
        # meanwhile stands. A controller restart in between leaves the agent in wrap-up
        # until they choose (the desk shows it).
        # When it ends goes with the change (its audit line): the desk counts down to it.
        ends_at = utc_now() + timedelta(seconds=limit)
        detail = {"ends_at": ends_at.isoformat()}
        if queue is not None:
            detail["queue"] = queue.name
        if not await self._move(agent_id, PresenceEvent.WRAP_UP_BEGINS, **detail):
            return
        await asyncio.sleep(limit)
        await self._move(agent_id, PresenceEvent.WRAP_UP_ENDS)

    async def _move(self, agent_id: int, event: PresenceEvent, **detail: str) -> bool:
        async with self.store.transaction() as tx:
            change = await tx.agents.try_change_presence(agent_id, event, actor=CONTROLLER,
                                                         **detail)
        if change is None:
            return False
        self.hub.publish(AGENTS_TOPIC, AgentChanged(agent_id))
        return True
