"""After the call: history, a number's conversation, call back, recordings.

Who sees what: supervisors and admins see every call; an agent sees the calls they
handled (talked to the caller on), and a number's page only if they handled one of its
calls, with only those calls, their notes and recordings. The route table lets every
signed-in agent in; these handlers narrow it per row.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from handoff.agents import AgentRole
from handoff.callback import BadNumber, check_number
from handoff.calls import CallOutcome
from handoff.live.xnode import agent_endpoint
from handoff.recordings import NotARecording, cached_peaks
from handoff.store import AgentBusy, NotFound, Transaction
from handoff.store.history_repo import CallFilter, HistoryRow
from handoff.trunks import OutboundRefused
from pbx.ari import AriError
from web.dashboard.access import ROLE_RANK, Shape
from web.dashboard.call_record import lines_of, parts_json, parts_of, quality_of
from web.dashboard.guard import json_error, refuse
from web.dashboard.sessions import Viewer
from web.dashboard.tools import tools_of, unavailable
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import busy_reason, json_body, render
from web.dashboard.words import Site

log = logging.getLogger(__name__)

MAX_NOTE = 4000
NUMBER_PATTERN = r"\+?[0-9]{1,20}"


def page_error(request: web.Request, status: int, reason: str) -> web.Response:
    return refuse(status, "not_found", reason, Shape.PAGE, request=request)


def sees_all(viewer: Viewer) -> bool:
    return ROLE_RANK[viewer.role] >= ROLE_RANK[AgentRole.SUPERVISOR]


class BadFilter(ValueError):
    pass


def parse_filter(query: dict[str, str], viewer: Viewer, site: Site) -> CallFilter:
    """The history filters from a query string (dates are the site's days); BadFilter
    says which one is wrong."""
    outcome = None
    if query.get("outcome"):
        try:
            outcome = CallOutcome(query["outcome"])
        except ValueError:
            raise BadFilter("outcome is one of " + ", ".join(o.value for o in CallOutcome)) \
                from None
    agent_id = None
    if query.get("agent"):
        if not query["agent"].isdigit():
            raise BadFilter("agent is an agent id")
        agent_id = int(query["agent"])
    try:
        since, until = site.day_range(query.get("from"), query.get("to"))
    except ValueError:
        raise BadFilter("from and to are dates (YYYY-MM-DD)") from None
    number = query.get("number", "").strip()
    if len(number) > 20 or (number and not all(c.isdigit() or c == "+" for c in number)):
        raise BadFilter("number is digits (a part of the caller's number)")
    return CallFilter(outcome=outcome, agent_id=agent_id, since=since, until=until,
                      number=number or None,
                      handled_by=None if sees_all(viewer) else viewer.agent_id)


def row_json(row: HistoryRow) -> dict[str, Any]:
    call = row.call
    return {
        "id": call.id,
        "started_at": call.started_at.isoformat(),
        "caller_number": call.caller_number,
        "caller_name": call.caller_name or "",
        "duration_s": row.duration_s,
        "handled_by": None if row.agent is None else {
            "id": row.agent.id, "display_name": row.agent.display_name},
        "outcome": call.outcome.value if call.outcome else None,
        "direction": call.direction.value,  # outbound: an agent's call-back
        "recording": bool(call.recording_path),
        "disposition": row.disposition,  # the agent's pick at wrap-up, or None
        # The caller left a message: the recording holds it from this moment on.
        "voicemail_at": call.voicemail_at.isoformat() if call.voicemail_at else None,
    }


async def _history(request: web.Request) -> tuple[CallFilter, list[HistoryRow]]:
    viewer = request[VIEWER]
    where = parse_filter(dict(request.query), viewer, request.app[DASHBOARD].options.site)
    offset = int(request.query["offset"]) if request.query.get("offset", "").isdigit() else 0
    async with request.app[DASHBOARD].store.transaction() as tx:
        rows = await tx.history.calls(where, offset=offset)
    return where, rows


async def history_page(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    try:
        _, rows = await _history(request)
        error = ""
    except BadFilter as exc:
        rows, error = [], str(exc)
    async with request.app[DASHBOARD].store.transaction() as tx:
        agents = [(a.id, a.display_name) for a in await tx.history.agents()] \
            if sees_all(viewer) else []
    return render(request, "history.html", status=400 if error else 200, error=error,
                  rows=[row_json(r) for r in rows], outcomes=[o.value for o in CallOutcome],
                  agents=agents, query=dict(request.query))


async def history_api(request: web.Request) -> web.Response:
    try:
        _, rows = await _history(request)
    except BadFilter as exc:
        return json_error(400, "bad_filter", str(exc))
    return web.json_response({"calls": [row_json(r) for r in rows]})


# ---- a number's conversation ---------------------------------------------------------


async def _may_see_number(tx: Transaction, viewer: Viewer, number: str) -> bool:
    return sees_all(viewer) or await tx.history.handled_number(number, viewer.agent_id)


async def contact_page(request: web.Request) -> web.Response:
    viewer, number = request[VIEWER], request.match_info["number"]
    async with request.app[DASHBOARD].store.transaction() as tx:
        if not await _may_see_number(tx, viewer, number):
            return page_error(request, 404, "no calls of this number that you handled")
        where = CallFilter(caller_number=number,
                           handled_by=None if sees_all(viewer) else viewer.agent_id)
        rows = await tx.history.calls(where, limit=500)
        conversation = await tx.history.conversation(number)
        calls = []
        names = await _names(tx)
        for row in rows:
            segments = await tx.transcripts.for_call(row.call.id)
            notes = await tx.notes.for_call(row.call.id)
            calls.append({**row_json(row),
                          "transcript": [(s.speaker.value, s.text) for s in segments],
                          "notes": [(n.at.isoformat(), n.text) for n in notes],
                          "quality": await _quality(tx, row.call.id, names)})
        contact_notes = [(n.at.isoformat(), n.text)
                         for n in await tx.notes.for_contact(number) if n.call_id is None]
    return render(request, "contact.html", number=number, conversation=conversation,
                  calls=calls, contact_notes=contact_notes)


async def _names(tx: Transaction) -> dict[int, str]:
    return {a.id: a.display_name for a in await tx.history.agents()}


async def _quality(tx: Transaction, call_id: str, names: dict[int, str]) -> dict[str, Any]:
    """The call's handoffs' quality records (web.dashboard.call_record.quality_of)."""
    return quality_of(await tx.handoffs.for_call(call_id), await tx.quality.for_call(call_id),
                      names)


async def set_follow_up(request: web.Request) -> web.Response:
    viewer, number = request[VIEWER], request.match_info["number"]
    value = (await json_body(request)).get("follow_up")
    if not isinstance(value, bool):
        return json_error(400, "bad_request", "follow_up must be true or false")
    async with request.app[DASHBOARD].store.transaction() as tx:
        if not await _may_see_number(tx, viewer, number):
            return json_error(404, "not_found", "no calls of this number that you handled")
        await tx.history.set_follow_up(number, value)
        await tx.audit.record(viewer.login, "follow_up", f"number:{number}",
                              {"follow_up": value})
        conversation = await tx.history.conversation(number)
    return web.json_response(conversation_json(conversation))


async def resolve(request: web.Request) -> web.Response:
    viewer, number = request[VIEWER], request.match_info["number"]
    async with request.app[DASHBOARD].store.transaction() as tx:
        if not await _may_see_number(tx, viewer, number):
            return json_error(404, "not_found", "no calls of this number that you handled")
        await tx.history.resolve(number, viewer.agent_id)
        await tx.audit.record(viewer.login, "resolve", f"number:{number}")
        conversation = await tx.history.conversation(number)
    return web.json_response(conversation_json(conversation))


async def add_contact_note(request: web.Request) -> web.Response:
    viewer, number = request[VIEWER], request.match_info["number"]
    text = (await json_body(request)).get("text")
    if not isinstance(text, str) or not text.strip():
        return json_error(400, "bad_request", "text is the note, not empty")
    if len(text) > MAX_NOTE:
        return json_error(400, "bad_request", f"a note is at most {MAX_NOTE} characters")
    async with request.app[DASHBOARD].store.transaction() as tx:
        if not await _may_see_number(tx, viewer, number):
            return json_error(404, "not_found", "no calls of this number that you handled")
        note = await tx.notes.add(text.strip(), contact_number=number,
                                  author_id=viewer.agent_id)
    return web.json_response({"note": {"at": note.at.isoformat(), "text": note.text}},
                             status=201)


def conversation_json(conversation: Any) -> dict[str, Any]:
    return {"number": conversation.number, "follow_up": conversation.follow_up,
            "pending_calls": conversation.pending_calls, "resolved": conversation.resolved}


async def call_back(request: web.Request) -> web.Response:
    """Ring the viewer's phone, then the number over the trunk (handoff.callback)."""
    viewer, number = request[VIEWER], request.match_info["number"]
    try:
        number = check_number(number)
    except BadNumber as exc:
        return json_error(400, "bad_number", str(exc))
    callbacks = tools_of(request).callbacks()
    if callbacks is None:
        return unavailable("calling back")
    dashboard = request.app[DASHBOARD]
    async with dashboard.store.transaction() as tx:
        if not await _may_see_number(tx, viewer, number):
            return json_error(404, "not_found", "no calls of this number that you handled")
        agent = await tx.agents.get(viewer.agent_id)
    try:
        # Through the node that holds their desk phone's open line, if another does.
        callback = await callbacks.call_back(
            number, agent_id=agent.id, endpoint=agent_endpoint(agent, dashboard.store.node),
            actor=viewer.login)
    except OutboundRefused as exc:
        # No trunk may carry it (none configured, or the number is outside every
        # trunk's patterns or classes): said as is, and already in the audit log.
        return json_error(409, "outbound_refused", exc.reason)
    except AgentBusy as exc:
        return json_error(409, "busy", busy_reason(exc))
    except AriError as exc:
        return json_error(409, "phone_unreachable",
                          f"your phone could not be reached ({exc.status}); is it registered?")
    return web.json_response({"callback": callback.to_json()}, status=202)


# ---- recordings ------------------------------------------------------------------------


async def _recording(request: web.Request) -> Path | web.Response:
    viewer, call_id = request[VIEWER], request.match_info["call_id"]
    async with request.app[DASHBOARD].store.transaction() as tx:
        try:
            call = await tx.calls.get(call_id)
        except NotFound:
            return json_error(404, "not_found", "no such call")
        if not sees_all(viewer) and not await tx.history.may_hear(call_id, viewer.agent_id):
            return json_error(404, "not_found", "no such call among those you handled")
    folder = tools_of(request).recordings
    if not call.recording_path or folder is None:
        return json_error(404, "no_recording", "this call has no recording")
    path = await asyncio.to_thread(servable, Path(call.recording_path), folder)
    if path is None:
        return json_error(404, "no_recording", "the recording file is gone")
    return path


def servable(path: Path, folder: Path) -> Path | None:
    """The path comes from our own ledger, but nothing outside the recordings folder is
    served, whatever a row says."""
    path = path.resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        return None
    return path


async def recording_page(request: web.Request) -> web.Response:
    found = await _recording(request)
    if isinstance(found, web.Response):
        return page_error(request, found.status, "this call has no recording you can play")
    call_id = request.match_info["call_id"]
    async with request.app[DASHBOARD].store.transaction() as tx:
        row = await tx.history.call(call_id)
        assert row is not None
        names = await _names(tx)
        handoffs = await tx.handoffs.for_call(call_id)
        lines = lines_of(row.call, await tx.transcripts.for_call(call_id))
        quality = await _quality(tx, call_id, names)
    # Who had the caller when, and where each line was said: the page marks the parts
    # on the waveform and a click on a line plays from there.
    return render(request, "recording.html", call=row_json(row), lines=lines,
                  quality=quality, parts=parts_json(parts_of(row.call, handoffs, names)))


async def recording_audio(request: web.Request) -> web.StreamResponse:
    found = await _recording(request)
    if isinstance(found, web.Response):
        return found
    disposition = "attachment" if request.query.get("download") else "inline"
    return web.FileResponse(found, headers={
        "Content-Type": "audio/wav",
        "Content-Disposition": f'{disposition}; filename="{found.name}"',
    })


async def recording_peaks(request: web.Request) -> web.Response:
    found = await _recording(request)
    if isinstance(found, web.Response):
        return found
    try:
        waveform = await asyncio.to_thread(cached_peaks, found)
    except NotARecording as exc:
        return json_error(422, "bad_recording", str(exc))
    return web.json_response(waveform)
