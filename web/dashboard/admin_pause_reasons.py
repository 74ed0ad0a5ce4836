"""The admin API for pause reasons: list, add, remove.

Reasons change here and with `switchboard pause-reason` (web.pause_reasons does the
checking and the audit lines under the admin's login). A desk offers the reasons listed
when it is loaded; an agent already away for a removed reason keeps it.
"""

from __future__ import annotations

from aiohttp import web

from web import pause_reasons
from web.dashboard.guard import json_error
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import json_body

_STATUS = {"not_found": 404, "name_taken": 409}


def _refused(exc: pause_reasons.PauseReasonRefused) -> web.Response:
    return json_error(_STATUS.get(exc.error, 400), exc.error, exc.reason)


async def list_reasons(request: web.Request) -> web.Response:
    async with request.app[DASHBOARD].store.transaction() as tx:
        rows = [pause_reasons.view(r) for r in await tx.pause_reasons.listed()]
    return web.json_response({"pause_reasons": rows})


async def add_reason(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await pause_reasons.add(tx, body, actor=request[VIEWER].login)
    except pause_reasons.PauseReasonRefused as exc:
        return _refused(exc)
    return web.json_response({"pause_reason": pause_reasons.view(row)}, status=201)


async def remove_reason(request: web.Request) -> web.Response:
    reason_id = int(request.match_info["reason_id"])
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await pause_reasons.remove(tx, reason_id, actor=request[VIEWER].login)
    except pause_reasons.PauseReasonRefused as exc:
        return _refused(exc)
    return web.json_response({"pause_reason": {**pause_reasons.view(row), "removed": True}})
