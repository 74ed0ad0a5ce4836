"""The admin API: agents (with SIP credentials), assistants' handoff rules, a test call,
the audit log. Every change is written to the audit log with the admin's login."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from handoff.agents import AgentRole, EndpointKind
from handoff.assistants import FallbackKind, HandoffLevel
from handoff.callback import BadNumber, check_number
from handoff.events import AGENTS_TOPIC, AgentChanged
from handoff.store import LastAdmin, NotFound, Removed
from handoff.store.models import Assistant, AuditEvent
from web import people
from web.dashboard.board import AgentView
from web.dashboard.guard import json_error
from web.dashboard.hub import CloseCode
from web.dashboard.tools import tools_of, unavailable
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import json_body

log = logging.getLogger(__name__)

MAX_TIMEOUT_S = 600
AUDIT_PAGE = 200


async def _reload_endpoints(request: web.Request, login: str) -> bool:
    """Have the running PBX render its endpoints again; False if it could not."""
    tools = tools_of(request)
    if tools.endpoints_changed is None:
        return False
    try:
        await tools.endpoints_changed()
    except Exception:
        log.exception("the PBX could not reload its endpoints after a change to %s", login)
        return False
    return True


async def create_agent(request: web.Request) -> web.Response:
    """A new agent with generated SIP credentials and a one-time dashboard password.

    The password is in this response only (the store keeps its hash): the admin hands
    it over, the agent signs in with it.
    """
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    body = await json_body(request)
    try:
        role = AgentRole(str(body.get("role", "agent")))
        kind = EndpointKind(str(body.get("endpoint_kind", "webrtc")))
    except ValueError:
        return json_error(400, "bad_request",
                          "role is agent, supervisor or admin; endpoint_kind webrtc or deskphone")
    try:
        async with dashboard.store.transaction() as tx:
            new = await people.add(
                tx, dashboard.passwords, login=str(body.get("login", "")),
                display_name=str(body.get("display_name", "")), role=role,
                endpoint_kind=kind, actor=viewer.login)
    except people.PersonRefused as exc:
        return json_error(409 if exc.error == "login_taken" else 400, exc.error, exc.reason)
    applied = await _reload_endpoints(request, new.agent.login)
    return web.json_response({
        "agent": AgentView.of(new.agent, busy_ids=()).to_json(),  # new: on no call yet
        "one_time_password": new.password,
        "sip": {"user": new.agent.sip_user, "password": new.sip_password},
        "endpoint_live": applied,
    }, status=201)


async def change_agent(request: web.Request) -> web.Response:
    """Disable, enable or remove a person. Disabling (and removing) ends their sessions
    and closes their tabs at once, and the PBX stops accepting their phone's REGISTER."""
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    agent_id = int(request.match_info["agent_id"])
    action = request.match_info["action"]
    if agent_id == viewer.agent_id and action != "enable":
        return json_error(409, "own_account", f"an admin cannot {action} their own account")
    try:
        async with dashboard.store.transaction() as tx:
            agent = await people.CHANGES[action](tx, agent_id, actor=viewer.login)
            busy = await tx.agents.busy_agent_ids()
    except NotFound:
        return json_error(404, "not_found", f"no agent {agent_id}")
    except (LastAdmin, Removed) as exc:
        return json_error(409, "last_admin" if isinstance(exc, LastAdmin) else "removed",
                          str(exc))
    if not agent.enabled:
        dashboard.hub.drop_agent(agent_id, CloseCode.SIGNED_OUT, f"account {action}d")
    dashboard.events.publish(AGENTS_TOPIC, AgentChanged(agent_id))
    applied = await _reload_endpoints(request, agent.login)
    return web.json_response({"agent": {**AgentView.of(agent, busy).to_json(),
                                        "enabled": agent.enabled,
                                        "removed": agent.removed_at is not None},
                              "endpoint_live": applied})


def assistant_json(a: Assistant) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "number_pattern": a.number_pattern,
            "adapter": a.adapter, "handoff_level": a.handoff_level.value,
            "accept_timeout_s": a.accept_timeout_s, "fallback_kind": a.fallback_kind.value,
            "fallback_number": a.fallback_number or ""}


async def assistants(request: web.Request) -> web.Response:
    async with request.app[DASHBOARD].store.transaction() as tx:
        rows = [assistant_json(a) for a in await tx.assistants.all()]
    return web.json_response({"assistants": rows,
                              "handoff_levels": [h.value for h in HandoffLevel],
                              "fallback_kinds": [f.value for f in FallbackKind]})


async def update_assistant(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    assistant_id = int(request.match_info["assistant_id"])
    body = await json_body(request)
    try:
        level = HandoffLevel(str(body.get("handoff_level")))
        kind = FallbackKind(str(body.get("fallback_kind")))
    except ValueError:
        return json_error(400, "bad_request", "handoff_level is one of "
                          + ", ".join(h.value for h in HandoffLevel) + "; fallback_kind one of "
                          + ", ".join(f.value for f in FallbackKind))
    timeout = body.get("accept_timeout_s")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or \
            not 5 <= timeout <= MAX_TIMEOUT_S:
        return json_error(400, "bad_request",
                          f"accept_timeout_s is whole seconds, 5 to {MAX_TIMEOUT_S}")
    number = str(body.get("fallback_number") or "").strip() or None
    if kind is FallbackKind.NUMBER:
        if number is None:
            return json_error(400, "bad_request", "a number fallback needs fallback_number")
        try:
            # Dialled over the trunk by the controller: the same strict check as a callback.
            number = check_number(number)
        except BadNumber as exc:
            return json_error(400, "bad_number", str(exc))
    async with request.app[DASHBOARD].store.transaction() as tx:
        try:
            before = assistant_json(await tx.assistants.get(assistant_id))
        except NotFound:
            return json_error(404, "not_found", f"no assistant {assistant_id}")
        after = assistant_json(await tx.assistants.set_handoff_rules(
            assistant_id, handoff_level=level, accept_timeout_s=timeout,
            fallback_kind=kind, fallback_number=number))
        changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
        await tx.audit.record(viewer.login, "assistant_changed",
                              f"assistant:{assistant_id}", changed)
    return web.json_response({"assistant": after})


async def test_call(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    place = tools_of(request).test_call
    if place is None:
        return unavailable("the demo carrier (test calls)")
    try:
        number = await place()
    except Exception as exc:
        log.exception("test call failed")
        return json_error(502, "test_call_failed", f"the test call could not be placed: {exc}")
    async with request.app[DASHBOARD].store.transaction() as tx:
        await tx.audit.record(viewer.login, "test_call", f"number:{number}")
    return web.json_response({"calling": number}, status=202)


def audit_json(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "action": e.action,
            "subject": e.subject, "detail": e.detail}


async def audit_log(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_PAGE:
        return json_error(400, "bad_request", f"limit is 1 to {AUDIT_PAGE}")
    async with request.app[DASHBOARD].store.transaction() as tx:
        events = [audit_json(e) for e in await tx.audit.recent(int(raw))]
    return web.json_response({"events": events})
