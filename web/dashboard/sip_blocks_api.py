"""The admin API of blocked SIP addresses (web.sip_blocks): the list, and lifting a block
early. Lifting is audited under the admin's login and reaches the PBX at once."""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from web.dashboard.guard import json_error
from web.dashboard.tools import tools_of
from web.dashboard.typedefs import DASHBOARD, VIEWER

log = logging.getLogger(__name__)


async def blocked_addresses(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    when = dashboard.options.site.when
    async with dashboard.store.transaction() as tx:
        blocks = await tx.blocks.active()
    return web.json_response({"blocks": [
        {"address": b.address, "blocked_at": b.blocked_at.isoformat(),
         "until": b.until.isoformat(), "failures": b.failures,
         "blocked_when": when(b.blocked_at), "until_when": when(b.until)} for b in blocks]})


async def lift_block(request: web.Request) -> web.Response:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    address = request.match_info["address"]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return json_error(400, "bad_request", f"{address!r} is not an IP address")
    async with dashboard.store.transaction() as tx:
        lifted = await tx.blocks.lift(address, viewer.login)
        if lifted:
            await tx.audit.record(viewer.login, "sip_block_lifted", address, {})
    if not lifted:
        return json_error(404, "not_found", f"{address} is not blocked")
    applied = False
    changed = tools_of(request).blocks_changed
    if changed is not None:
        try:
            await changed()
            applied = True
        except Exception:
            log.exception("the PBX could not take the lifted block of %s", address)
    # Not applied now: the blocker's own check brings the PBX up to date within 15 s.
    return web.json_response({"address": address, "lifted": True, "applied": applied})
