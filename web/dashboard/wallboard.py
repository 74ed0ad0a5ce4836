"""The supervisor board's floor view: the callers waiting for a person, and a strip per
queue (callers waiting, the longest wait, its members by state, today's service level).

Read from the store on demand, like the list of live calls: the board re-reads it when
its socket says a card, a call or an agent changed, so every process serving dashboards
shows the same floor. Waits are sent as moments, not durations: the page counts them up
itself between two reads.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from handoff.agents import AgentState, agent_state
from handoff.store.transitions import utc_now
from web.dashboard.feed import card_for
from web.dashboard.typedefs import DASHBOARD


async def floor(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    site = dashboard.options.site
    # "Today" is the site's day: its midnight, wherever the server's clock is.
    today = site.day_start(site.local(utc_now()).date())
    async with dashboard.store.transaction() as tx:
        # Most urgent first, then the longest waiting (HandoffsRepo.offered's order).
        waiting = [(handoff.queue_id, await card_for(tx, handoff))
                   for handoff in await tx.handoffs.offered()]
        busy = await tx.agents.busy_agent_ids()
        people = {agent.id: agent for agent in await tx.agents.all()}
        rows = await tx.queues.listed()
        names = {row.id: row.name for row in rows}
        queues: list[dict[str, Any]] = []
        for row in rows:
            stats = await tx.queues.stats(row.id, since=today)
            states = Counter(
                agent_state(people[m.agent_id].presence, m.agent_id in busy).value
                for m in await tx.queues.members(row.id) if m.agent_id in people)
            queued = [card for queue_id, card in waiting if queue_id == row.id]
            queues.append({
                "id": row.id, "name": row.name,
                "waiting": len(queued),
                "longest_waiting_since": min(
                    (card.waiting_since for card in queued), default=None),
                # Every state, zeros included: the strip's figures keep their places.
                "agents": {state.value: states.get(state.value, 0) for state in AgentState},
                "service_level": stats.service_level,
                "service_level_s": row.service_level_s,
                "answered_today": stats.answered,
            })
    for queue in queues:
        since = queue["longest_waiting_since"]
        queue["longest_waiting_since"] = since.isoformat() if since else None
    return web.json_response({
        "waiting": [{**card.to_json(), "queue": names.get(queue_id or -1, "")}
                    for queue_id, card in waiting],
        "queues": queues,
    })
