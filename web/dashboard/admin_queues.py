"""The admin API for queues: list (with each one's figures), add, change, remove.

Queues change here and with `switchboard queue` (web.queues does the checking and the
audit lines under the admin's login). Routing reads them at each handoff, so a change
applies from the next card; nothing in the PBX needs reloading.
"""

from __future__ import annotations

from aiohttp import web

from handoff.queues import MAX_LEVEL, MIN_LEVEL, Strategy
from web import queues
from web.dashboard.guard import json_error
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import json_body

_STATUS = {"not_found": 404, "name_taken": 409, "assistant_taken": 409, "topic_taken": 409}


def _refused(exc: queues.QueueRefused) -> web.Response:
    return json_error(_STATUS.get(exc.error, 400), exc.error, exc.reason)


async def list_queues(request: web.Request) -> web.Response:
    async with request.app[DASHBOARD].store.transaction() as tx:
        rows = [await queues.view(tx, row) for row in await tx.queues.listed()]
    return web.json_response({"queues": rows, "strategies": [s.value for s in Strategy],
                              "levels": [MIN_LEVEL, MAX_LEVEL]})


async def add_queue(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await queues.add(tx, body, actor=request[VIEWER].login)
            shown = await queues.view(tx, row)
    except queues.QueueRefused as exc:
        return _refused(exc)
    return web.json_response({"queue": shown}, status=201)


async def change_queue(request: web.Request) -> web.Response:
    body = await json_body(request)
    queue_id = int(request.match_info["queue_id"])
    if "name" in body:
        return json_error(400, "bad_request", "a queue's name does not change")
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await queues.edit(tx, queue_id, body, actor=request[VIEWER].login)
            shown = await queues.view(tx, row)
    except queues.QueueRefused as exc:
        return _refused(exc)
    return web.json_response({"queue": shown})


async def remove_queue(request: web.Request) -> web.Response:
    queue_id = int(request.match_info["queue_id"])
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await queues.remove(tx, queue_id, actor=request[VIEWER].login)
    except queues.QueueRefused as exc:
        return _refused(exc)
    return web.json_response({"queue": {"id": row.id, "name": row.name, "removed": True}})
