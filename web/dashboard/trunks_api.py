"""The admin API for trunks: list (with each one's status), add, change, remove.

The stored trunks change here (web.trunks, shared with `switchboard trunk`); the settings
file's and the demo carrier's are listed read-only. Each change is audited under the
admin's login and reaches the running PBX at once (a PJSIP reload: calls in progress go
on). A trunk's password is never sent back, only whether one is set.
"""

from __future__ import annotations

import logging

from aiohttp import web

from handoff.trunks import COUNTRIES
from pbx.config_values import TRUNK_CODECS
from web import trunks
from web.dashboard.guard import json_error
from web.dashboard.tools import tools_of
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import json_body

log = logging.getLogger(__name__)

_STATUS_FOR = {"not_found": 404, "name_taken": 409}


def _refused(exc: trunks.TrunkRefused) -> web.Response:
    return json_error(_STATUS_FOR.get(exc.error, 400), exc.error, exc.reason)


async def _apply(request: web.Request) -> bool:
    """Have the running PBX render its trunks again; False if it could not."""
    changed = tools_of(request).endpoints_changed
    if changed is None:
        return False
    try:
        await changed()
    except Exception:
        log.exception("the PBX could not reload its trunks")
        return False
    return True


async def list_trunks(request: web.Request) -> web.Response:
    tools = tools_of(request)
    statuses = tools.trunk_statuses()
    async with request.app[DASHBOARD].store.transaction() as tx:
        rows = await trunks.listing(tx, tools.fixed_trunks())
    return web.json_response({
        "trunks": [trunks.view(r.trunk, r.trunk_id, statuses.get(r.trunk.name)) for r in rows],
        "codecs": list(TRUNK_CODECS), "countries": sorted(COUNTRIES),
    })


async def add_trunk(request: web.Request) -> web.Response:
    body = await json_body(request)
    names = [t.name for t in tools_of(request).fixed_trunks()]
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await trunks.add(tx, body, actor=request[VIEWER].login, fixed_names=names)
    except trunks.TrunkRefused as exc:
        return _refused(exc)
    return web.json_response({"trunk": {"id": row.id, "name": row.name},
                              "pbx_live": await _apply(request)}, status=201)


async def change_trunk(request: web.Request) -> web.Response:
    body = await json_body(request)
    trunk_id = int(request.match_info["trunk_id"])
    names = [t.name for t in tools_of(request).fixed_trunks()]
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await trunks.edit(tx, trunk_id, body, actor=request[VIEWER].login,
                                    fixed_names=names)
    except trunks.TrunkRefused as exc:
        return _refused(exc)
    return web.json_response({"trunk": {"id": row.id, "name": row.name},
                              "pbx_live": await _apply(request)})


async def remove_trunk(request: web.Request) -> web.Response:
    trunk_id = int(request.match_info["trunk_id"])
    try:
        async with request.app[DASHBOARD].store.transaction() as tx:
            row = await trunks.remove(tx, trunk_id, actor=request[VIEWER].login)
    except trunks.TrunkRefused as exc:
        return _refused(exc)
    return web.json_response({"trunk": {"id": row.id, "name": row.name},
                              "pbx_live": await _apply(request)})
