"""Dispositions: the admin's list (list, add, remove) and an agent's pick for a call
they handled, at wrap-up (web.dispositions does the checking and the audit lines)."""

from __future__ import annotations

from aiohttp import web

from handoff.store import NotFound
from web import dispositions
from web.dashboard.guard import json_error
from web.dashboard.history import sees_all
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import json_body
from web.pause_reasons import PauseReasonRefused

_STATUS = {"not_found": 404, "name_taken": 409}


def _refused(exc: PauseReasonRefused) -> web.Response:
    return json_error(_STATUS.get(exc.error, 400), exc.error, exc.reason)


async def list_dispositions(request: web.Request) -> web.Response:
    """For admins (the Admin page) and agents (the desk's wrap-up menu) alike, with the
    viewer's last call that has none yet (the desk offers to pick for it)."""
    async with request.app[DASHBOARD].store.transaction() as tx:
        rows = [dispositions.view(r) for r in await tx.dispositions.listed()]
        found = await tx.dispositions.undisposed(request[VIEWER].agent_id)
    pending = None if found is None else {
        "call_id": found[0].id, "required": found[1],
        "caller": found[0].caller_name or found[0].caller_number}
    return web.json_response({"dispositions": rows, "pending": pending})


async def add_disposition(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await dispositions.add(tx, body, actor=request[VIEWER].login)
    except PauseReasonRefused as exc:
        return _refused(exc)
    return web.json_response({"disposition": dispositions.view(row)}, status=201)


async def remove_disposition(request: web.Request) -> web.Response:
    disposition_id = int(request.match_info["disposition_id"])
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await dispositions.remove(tx, disposition_id, actor=request[VIEWER].login)
    except PauseReasonRefused as exc:
        return _refused(exc)
    return web.json_response({"disposition": {**dispositions.view(row), "removed": True}})


async def pick_disposition(request: web.Request) -> web.Response:
    viewer, call_id = request[VIEWER], request.match_info["call_id"]
    body = await json_body(request)
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            if not sees_all(viewer) and not await tx.history.handled(call_id, viewer.agent_id):
                return json_error(404, "not_found", "no such call among those you handled")
            await dispositions.pick(tx, call_id, body.get("disposition_id"),
                                    actor=viewer.login)
    except PauseReasonRefused as exc:
        return _refused(exc)
    except NotFound:
        # Only a supervisor or admin gets here with a call that does not exist.
        return json_error(404, "not_found", f"no call {call_id}")
    return web.json_response({"call_id": call_id, "disposition_id": body["disposition_id"]})
