"""The softphone's credentials and the call panel: end, notes, return to AI, transfer.

The access table lets any signed-in agent reach these routes; who may act on a given
call is decided here, from the store: the agent whose accepted handoff is on the call,
or a supervisor (or admin). An agent can never end, note or transfer a colleague's call
by guessing its id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from handoff.agents import AgentRole, EndpointKind
from handoff.events import CALLS_TOPIC, CallChanged
from handoff.handoffs import AGENT_BUSY_STATES
from handoff.live import (
    AgentNotAvailable,
    CallStateConflict,
    LineBackoff,
    LineRefused,
    NodeUnanswered,
    QueueNotAvailable,
)
from handoff.store import NotFound, Transaction
from handoff.store.models import Handoff, TranscriptSegment
from web.dashboard.access import ROLE_RANK
from web.dashboard.guard import json_error
from web.dashboard.sessions import Viewer
from web.dashboard.softphone import softphone_url
from web.dashboard.tools import tools_of
from web.dashboard.typedefs import DASHBOARD, VIEWER, Commands, Dashboard
from web.dashboard.views import json_body

log = logging.getLogger(__name__)

MAX_NOTE_LENGTH = 2000


def transcript_json(segments: Iterable[TranscriptSegment]) -> list[dict[str, str]]:
    """A transcript as the panel and the supervisor board read it (and as the board's
    transcript_line deltas carry each new line)."""
    return [{"speaker": s.speaker.value, "text": s.text, "at": s.at.isoformat()}
            for s in segments]


# ---- the softphone ---------------------------------------------------------------------


async def softphone(request: web.Request) -> web.Response:
    """The signed-in agent's own SIP credentials, for their browser softphone only.

    Served per session (never embedded in the page's HTML, which proxies and the
    browser's history may keep), with Cache-Control: no-store from the guard.
    """
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    if dashboard.softphone is None:
        return json_error(404, "no_softphone", "this installation has no browser softphones")
    url = softphone_url(request)
    if url is None:
        return json_error(503, "no_pbx", "the phone system is starting; try again shortly")
    async with dashboard.store.transaction() as tx:
        agent = await tx.agents.get(viewer.agent_id)
    if agent.endpoint_kind is not EndpointKind.WEBRTC:
        return json_error(409, "desk_phone", "your calls ring your desk phone, not the browser")
    host = urlsplit(url).hostname or "127.0.0.1"
    return web.json_response({
        "websocket_url": url,
        "sip_uri": f"sip:{agent.sip_user}@{host}",
        "sip_user": agent.sip_user,
        "password": agent.sip_password,
        "display_name": agent.display_name,
        # The tab keeps an open line while on duty (handoff.live.lines).
        "open_line": dashboard.commands.open_lines,
    })


async def open_line(request: web.Request) -> web.Response:
    """The agent's tab asks for its open line: the PBX calls the browser phone, which
    answers by itself. Asked on going on duty, and again whenever the tab has lost its
    line (a reload, a network blip); an idle line the PBX still has is replaced."""
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    async with dashboard.store.transaction() as tx:
        agent = await tx.agents.get(viewer.agent_id)
    if agent.endpoint_kind is not EndpointKind.WEBRTC:
        return json_error(409, "desk_phone", "your calls ring your desk phone")
    if not agent.on_duty:
        # Off duty the line would ring for nothing: nobody is putting calls through.
        return json_error(409, "off_duty", "go on duty first")
    try:
        state = await dashboard.commands.open_line(agent.id, agent.sip_user)
    except LineBackoff as exc:
        # Its last lines carried no audio (an outage between the tab and the PBX): the
        # tab asks again when told, and the desk says the line is down meanwhile.
        retry_after = max(1, math.ceil(exc.retry_after_s))
        refused = json_error(503, "line_backoff", str(exc), retry_after_s=retry_after)
        refused.headers["Retry-After"] = str(retry_after)
        return refused
    except LineRefused as exc:
        return json_error(409, "line_refused", str(exc))
    return web.json_response({"line": state})


# ---- who is on which call --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seat:
    """The viewer's relation to a call: the handoff they hold on it, if any."""

    handoff: Handoff | None
    supervising: bool


def _is_supervisor(viewer: Viewer) -> bool:
    return ROLE_RANK[viewer.role] >= ROLE_RANK[AgentRole.SUPERVISOR]


async def _held_by(tx: Transaction, agent_id: int) -> Handoff | None:
    """The handoff an agent is on (or joining) a call through, if any."""
    for handoff in await tx.handoffs.open_handoffs():
        if handoff.accepted_by == agent_id and handoff.state in AGENT_BUSY_STATES:
            return handoff
    return None


async def _seat(tx: Transaction, call_id: str, viewer: Viewer) -> Seat | None:
    """None when the viewer may not act on this call."""
    held = next(
        (h for h in await tx.handoffs.open_for_call(call_id)
         if h.accepted_by == viewer.agent_id and h.state in AGENT_BUSY_STATES),
        None,
    )
    if held is not None:
        return Seat(held, supervising=False)
    if _is_supervisor(viewer):
        return Seat(None, supervising=True)
    return None


async def _authorised(request: web.Request) -> tuple[Dashboard, Viewer, str, Seat] | web.Response:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    call_id = request.match_info["call_id"]
    async with dashboard.store.transaction() as tx:
        seat = await _seat(tx, call_id, viewer)
    if seat is None:
        # Same answer whether the call exists or not (as for history and recordings):
        # call ids are not to be probed.
        return json_error(404, "not_found", "no such call of yours")
    return dashboard, viewer, call_id, seat


def _refusal(exc: Exception) -> web.Response:
    if isinstance(exc, NotFound):
        return json_error(404, "not_found", "this call has ended")
    if isinstance(exc, CallStateConflict):
        return json_error(409, "call_state", str(exc), state=exc.state.value)
    if isinstance(exc, AgentNotAvailable):
        return json_error(409, "agent_not_available",
                          "that colleague is not available (off duty, away or on a call)")
    if isinstance(exc, NodeUnanswered):
        return node_unanswered(exc)
    raise exc


def node_unanswered(exc: NodeUnanswered) -> web.Response:
    """Another node holds the call and did not answer: the command may or may not have
    been carried out there, so the desk is told to look again rather than to retry."""
    return json_error(503, "node_unavailable",
                      f"node {exc.node}, which holds this call, {exc.why}; "
                      "check the call before trying again", node=exc.node)


# ---- the panel -------------------------------------------------------------------------


async def current_call(request: web.Request) -> web.Response:
    """The viewer's own call for the panel: caller, timer start, transcript, notes, the
    colleagues a transfer can go to, and a transfer in progress. A supervisor whose
    phone is listening to, whispering into or barging in on a call gets that call."""
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    async with dashboard.store.transaction() as tx:
        held = await _held_by(tx, viewer.agent_id)
        watching = None if held is not None else next(
            iter(await tx.supervisions.of_supervisor(viewer.agent_id)), None)
        if held is not None:
            call_id = held.call_id
        elif watching is not None:
            call_id = watching.call_id
        else:
            return web.json_response({"call": None})
        call = await tx.calls.get(call_id)
        transcript = await tx.transcripts.for_call(call.id)
        notes = await tx.notes.for_call(call.id)
        authors = {a.id: a.display_name for a in await tx.agents.all(include_removed=True)}
        colleagues = ([] if held is None else
                      [a for a in await tx.agents.available() if a.id != viewer.agent_id])
        transfer = None if held is None else next(
            (h for h in await tx.handoffs.open_for_call(call.id)
             if h.id != held.id and h.target_agent_id is not None),
            None,
        )
    body: dict[str, Any] = {
        "call_id": call.id,
        "handoff_id": held.id if held else None,
        "state": held.state.value if held else call.state.value,
        "caller_number": call.caller_number,
        "caller_name": call.caller_name or "",
        "direction": call.direction.value,  # outbound: the agent's call-back (no AI)
        # listen, whisper or barge: the viewer supervises this call; it is not theirs.
        "supervising": None if watching is None else watching.mode,
        "summary": held.summary or "" if held else "",
        "note": held.note or "" if held else "",
        # The timer counts the human part: from the moment this agent was connected.
        "connected_at": held.connected_at.isoformat() if held and held.connected_at else None,
        "transcript": transcript_json(transcript),
        "notes": [{"text": n.text, "at": n.at.isoformat(),
                   "author": authors.get(n.author_id or -1, "")} for n in notes],
        "colleagues": [{"id": a.id, "display_name": a.display_name} for a in colleagues],
        "transfer": None if transfer is None else {
            "handoff_id": transfer.id, "state": transfer.state.value,
            "to": authors.get(transfer.target_agent_id or -1, ""),
        },
    }
    return web.json_response({"call": body})


async def _call_command(
    request: web.Request,
    command: Callable[[Commands, str], Awaitable[None]],
    action: str,
    answer: str,
) -> web.Response:
    """Run one panel command on the viewer's call (or a supervised one) and audit it."""
    checked = await _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    dashboard, viewer, call_id, seat = checked
    try:
        await command(dashboard.commands, call_id)
    except (NotFound, CallStateConflict, NodeUnanswered) as exc:
        return _refusal(exc)
    await _audit(dashboard, viewer, action, call_id, {"supervising": seat.supervising})
    return web.json_response({answer: call_id})


async def end_call(request: web.Request) -> web.Response:
    callbacks = tools_of(request).callbacks()

    async def end(commands: Commands, call_id: str) -> None:
        # A call-back is the agent's own outbound call, not one of the call controller's.
        if callbacks is None or not await callbacks.end(call_id):
            await commands.end_call(call_id)

    return await _call_command(request, end, "call_ended", "ended")


def _is_call_back(request: web.Request) -> bool:
    callbacks = tools_of(request).callbacks()
    return callbacks is not None and callbacks.of_call(request.match_info["call_id"]) is not None


async def return_to_ai(request: web.Request) -> web.Response:
    if _is_call_back(request):
        return json_error(409, "call_back", "a call-back has no AI to return the caller to")
    return await _call_command(
        request, lambda commands, call_id: commands.return_to_ai(call_id),
        "returned_to_ai", "returned",
    )


async def add_note(request: web.Request) -> web.Response:
    checked = await _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    dashboard, viewer, call_id, _ = checked
    text = (await json_body(request)).get("text")
    if not isinstance(text, str) or not text.strip():
        return json_error(400, "bad_request", "a note needs some text")
    if len(text) > MAX_NOTE_LENGTH:
        return json_error(400, "bad_request", f"a note is at most {MAX_NOTE_LENGTH} characters")
    async with dashboard.store.transaction() as tx:
        call = await tx.calls.get(call_id)
        # Kept with the caller's number too, so the contact page shows it on later calls.
        note = await tx.notes.add(text.strip(), call_id=call_id, author_id=viewer.agent_id,
                                  contact_number=call.caller_number or None)
    dashboard.events.publish(CALLS_TOPIC, CallChanged(call_id))
    return web.json_response({"note": {"text": note.text, "at": note.at.isoformat(),
                                       "author": viewer.display_name}})


async def transfer(request: web.Request) -> web.Response:
    checked = await _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    dashboard, viewer, call_id, seat = checked
    body = await json_body(request)
    to_agent, to_queue = body.get("to_agent_id"), body.get("to_queue_id")
    note = body.get("note", "")
    target = to_agent if to_queue is None else to_queue
    if (to_agent is None) == (to_queue is None) or not isinstance(target, int) \
            or isinstance(target, bool) or not isinstance(note, str):
        return json_error(400, "bad_request",
                          "to_agent_id is an agent id, or to_queue_id a queue id; note is text")
    if len(note) > MAX_NOTE_LENGTH:
        return json_error(400, "bad_request", f"a note is at most {MAX_NOTE_LENGTH} characters")
    if seat.handoff is None or seat.handoff.accepted_by is None:
        # A supervisor not on the call has no leg to hand over; they take over instead.
        return json_error(409, "not_on_call", "only the agent talking to the caller transfers")
    if _is_call_back(request):
        return json_error(409, "call_back", "a call-back is not transferred; call again later")
    try:
        if to_queue is None:
            handoff_id = await dashboard.commands.transfer(
                call_id, seat.handoff.accepted_by, target, note.strip())
        else:
            handoff_id = await dashboard.commands.transfer_to_queue(
                call_id, seat.handoff.accepted_by, target, note.strip())
    except QueueNotAvailable as exc:
        return json_error(409, "queue_not_available", str(exc))
    except (NotFound, CallStateConflict, AgentNotAvailable, NodeUnanswered) as exc:
        return _refusal(exc)
    await _audit(dashboard, viewer, "transfer", call_id,
                 {"to_queue" if to_queue is not None else "to_agent": target,
                  "handoff": handoff_id})
    return web.json_response({"transfer": handoff_id})


async def _audit(dashboard: Dashboard, viewer: Viewer, action: str, call_id: str,
                 detail: dict[str, Any]) -> None:
    async with dashboard.store.transaction() as tx:
        await tx.audit.record(viewer.login, action, f"call:{call_id}", detail)
    log.info("agent %s: %s call=%s %s", viewer.login, action, call_id, detail)
