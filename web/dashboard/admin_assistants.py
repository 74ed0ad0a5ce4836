"""The admin API for assistants: create, edit (numbers, engine, handoff rules), rotate
the control token, disable, enable, remove. Each change is audited under the admin's
login (web.assistants) and applied at once: the PBX reloads its dialplan (calls up go
on) and the built-in receptionist answers for the assistants now on it."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from handoff.assistants import FallbackKind, HandoffLevel
from handoff.store import NotFound, Removed
from handoff.topics import Topic
from web import assistants as a
from web.dashboard.admin import reload_directory
from web.dashboard.guard import json_error
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import json_body

log = logging.getLogger(__name__)

_STATUS = {"name_taken": 409, "number_taken": 409, "builtin_token": 409, "removed": 409}


def _refused(exc: a.AssistantRefused) -> web.Response:
    return json_error(_STATUS.get(exc.error, 400), exc.error, exc.reason)


def _numbers(body: dict[str, Any]) -> list[str] | None:
    raw = body.get("numbers")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise a.AssistantRefused("bad_request", "numbers is a list of strings")
    return raw


def _topics(body: dict[str, Any]) -> list[Topic] | None:
    raw = body.get("restricted_topics")
    return None if raw is None else a.parse_topics(raw)


def _issued(issued: a.Issued, applied: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"assistant": a.view(issued.assistant, issued.numbers),
                           "live": applied}
    if issued.token is not None:
        out["token"] = issued.token  # shown once: only its hash is kept
    return out


async def assistants(request: web.Request) -> web.Response:
    async with request.app[DASHBOARD].store.transaction() as tx:
        numbers = await tx.assistants.numbers()
        rows = [a.view(x, numbers.get(x.id, [])) for x in await tx.assistants.listed()]
    return web.json_response({"assistants": rows,
                              "handoff_levels": [h.value for h in HandoffLevel],
                              "fallback_kinds": [f.value for f in FallbackKind]})


async def create_assistant(request: web.Request) -> web.Response:
    viewer, body = request[VIEWER], await json_body(request)
    try:
        numbers = _numbers(body) or []
        rules = a.rules_from(body, None)
        topics = _topics(body) or []
        hours, menu = a.hours_from(body, None), a.menu_from(body, None)
        async with request.app[DASHBOARD].store.transaction() as tx:
            issued = await a.add(tx, name=str(body.get("name", "")), numbers=numbers,
                                 engine=str(body.get("engine", "")), actor=viewer.login,
                                 rules=rules, topics=topics, hours=hours, menu=menu,
                                 announcements=a.announcements_from(body))
    except a.AssistantRefused as exc:
        return _refused(exc)
    applied = await reload_directory(request, f"assistant {issued.assistant.name}")
    return web.json_response(_issued(issued, applied), status=201)


async def update_assistant(request: web.Request) -> web.Response:
    """Any of numbers, engine, the handoff rules, the restricted topics, the business
    hours, the DTMF menu and the announcements; what is not given stays."""
    viewer, body = request[VIEWER], await json_body(request)
    assistant_id = int(request.match_info["assistant_id"])
    engine = body.get("engine")
    try:
        numbers, topics = _numbers(body), _topics(body)
        async with request.app[DASHBOARD].store.transaction() as tx:
            current = await tx.assistants.get(assistant_id)
            rules, hours = a.rules_from(body, current), a.hours_from(body, current)
            issued = await a.edit(tx, assistant_id, actor=viewer.login, numbers=numbers,
                                  engine=None if engine is None else str(engine), rules=rules,
                                  topics=topics, hours=hours, menu=a.menu_from(body, current),
                                  announcements=a.announcements_from(body))
    except NotFound:
        return json_error(404, "not_found", f"no assistant {assistant_id}")
    except a.AssistantRefused as exc:
        return _refused(exc)
    applied = await reload_directory(request, f"assistant {issued.assistant.name}")
    return web.json_response(_issued(issued, applied))


async def rotate_token(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    assistant_id = int(request.match_info["assistant_id"])
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            token = await a.rotate_token(tx, assistant_id, actor=viewer.login)
    except NotFound:
        return json_error(404, "not_found", f"no assistant {assistant_id}")
    except a.AssistantRefused as exc:
        return _refused(exc)
    return web.json_response({"token": token})


async def change_assistant(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    assistant_id = int(request.match_info["assistant_id"])
    action = request.match_info["action"]
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            assistant = await a.CHANGES[action](tx, assistant_id, actor=viewer.login)
            numbers = await tx.assistants.numbers_of(assistant_id)
    except NotFound:
        return json_error(404, "not_found", f"no assistant {assistant_id}")
    except Removed as exc:
        return json_error(409, "removed", str(exc))
    applied = await reload_directory(request, f"assistant {assistant.name}")
    return web.json_response({"assistant": {**a.view(assistant, numbers),
                                            "removed": assistant.removed_at is not None},
                              "live": applied})
