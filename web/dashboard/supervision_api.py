"""The supervisor board's API: every live call, and listen / whisper / barge / take over.

The board lists calls from the ledger (open calls, with the agent who has each one, and
the viewer's own sessions), so it shows the same picture in every process and on every
node; the commands go to the controller's Supervision, which dials the supervisor's own
phone.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from handoff.calls import CallState
from handoff.handoffs import HandoffState
from handoff.live import NodeUnanswered
from handoff.store import NotFound
from handoff.supervision import Mode, SupervisionRefused, Supervisor, SupervisorUnreachable
from web.dashboard.calls_api import node_unanswered, transcript_json
from web.dashboard.guard import json_error
from web.dashboard.tools import tools_of, unavailable
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.words import topic_name

log = logging.getLogger(__name__)

_WITH_AGENT = (HandoffState.ACCEPTED, HandoffState.CONNECTING, HandoffState.CONNECTED)


async def live_calls(request: web.Request) -> web.Response:
    viewer, site = request[VIEWER], request.app[DASHBOARD].options.site
    calls: list[dict[str, Any]] = []
    async with request.app[DASHBOARD].store.transaction() as tx:
        # The viewer's sessions, whichever node holds each call (the store has them all).
        mine = {s.call_id: s.mode for s in await tx.supervisions.of_supervisor(viewer.agent_id)}
        names = {a.id: a.display_name for a in await tx.agents.all(include_removed=True)}
        assistants = {a.id: a.name for a in await tx.assistants.all()}
        for call in await tx.calls.open_calls():
            if call.state is CallState.NEW:
                continue
            agent, topic = None, None
            for handoff in await tx.handoffs.for_call(call.id):
                # What the call is about: the latest attempt's topic (a transfer's, say).
                topic = handoff.topic or topic
                if handoff.state in _WITH_AGENT and handoff.accepted_by is not None:
                    agent = {"id": handoff.accepted_by,
                             "display_name": names.get(handoff.accepted_by, "?"),
                             "connected": handoff.state is HandoffState.CONNECTED}
            calls.append({
                "id": call.id,
                "caller_number": call.caller_number,
                "caller_name": call.caller_name or "",
                "state": call.state.value,
                "direction": call.direction.value,
                "assistant": assistants.get(call.assistant_id or -1, ""),
                "topic": topic,
                "topic_name": topic_name(topic),
                "answered_at": (call.answered_at or call.started_at).isoformat(),
                "answered_when": site.when(call.answered_at or call.started_at),
                "agent": agent,
                "supervising": mine.get(call.id),
            })
    return web.json_response({"calls": calls})


async def transcript(request: web.Request) -> web.Response:
    """A live call's transcript so far, when a supervisor opens it on the board; the
    lines said after come as transcript_line deltas on the page's socket."""
    call_id = request.match_info["call_id"]
    async with request.app[DASHBOARD].store.transaction() as tx:
        try:
            call = await tx.calls.get(call_id)
        except NotFound:
            return json_error(404, "not_found", "no such call")
        segments = await tx.transcripts.for_call(call.id)
    return web.json_response({"call_id": call.id, "state": call.state.value,
                              "lines": transcript_json(segments)})


async def supervise(request: web.Request) -> web.Response:
    viewer, call_id = request[VIEWER], request.match_info["call_id"]
    try:
        mode = Mode(request.match_info["mode"])
    except ValueError:
        return json_error(404, "not_found", "mode is listen, whisper, barge or take_over")
    supervision = tools_of(request).supervision()
    if supervision is None:
        return unavailable("supervision")
    async with request.app[DASHBOARD].store.transaction() as tx:
        agent = await tx.agents.get(viewer.agent_id)
    supervisor = Supervisor(agent.id, agent.login, agent.sip_user)
    try:
        session = await supervision.supervise(call_id, supervisor, mode)
    except NotFound:
        return json_error(404, "not_found", "no such live call")
    except SupervisorUnreachable as exc:
        return json_error(409, exc.error, exc.reason)
    except SupervisionRefused as exc:
        return json_error(409, exc.error, exc.reason)
    except NodeUnanswered as exc:
        return node_unanswered(exc)
    return web.json_response({"supervision": session.to_json()})


async def stop(request: web.Request) -> web.Response:
    viewer, call_id = request[VIEWER], request.match_info["call_id"]
    supervision = tools_of(request).supervision()
    if supervision is None:
        return unavailable("supervision")
    async with request.app[DASHBOARD].store.transaction() as tx:
        agent = await tx.agents.get(viewer.agent_id)
    try:
        await supervision.stop(call_id, Supervisor(agent.id, agent.login, agent.sip_user))
    except NotFound:
        return json_error(404, "not_found", "you are not supervising this call")
    except NodeUnanswered as exc:
        return node_unanswered(exc)
    return web.json_response({"stopped": call_id})
