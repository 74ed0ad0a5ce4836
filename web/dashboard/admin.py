"""The admin API: agents (with SIP credentials), a test call (assistants:
admin_assistants.py; the audit log: audit.py). Every change is written to the audit log
with the admin's login."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from handoff.agents import AgentRole, EndpointKind
from handoff.events import AGENTS_TOPIC, AgentChanged
from handoff.store import LastAdmin, NotFound, Removed, Transaction
from handoff.store.models import Agent
from web import people
from web.dashboard.board import AgentView
from web.dashboard.guard import json_error
from web.dashboard.hub import CloseCode
from web.dashboard.tools import tools_of, unavailable
from web.dashboard.typedefs import DASHBOARD, VIEWER
from web.dashboard.views import json_body

log = logging.getLogger(__name__)

async def reload_directory(request: web.Request, login: str) -> bool:
    """Have the running PBX render its endpoints and numbers again (and the built-in
    receptionist take its assistants); False if it could not."""
    tools = tools_of(request)
    if tools.endpoints_changed is None:
        return False
    try:
        await tools.endpoints_changed()
    except Exception:
        log.exception("the PBX could not reload after a change to %s", login)
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
    takes_calls = body.get("takes_calls", True)
    if not isinstance(takes_calls, bool):
        return json_error(400, "bad_request", "takes_calls must be true or false")
    try:
        async with dashboard.store.transaction() as tx:
            new = await people.add(
                tx, dashboard.passwords, login=str(body.get("login", "")),
                display_name=str(body.get("display_name", "")), role=role,
                endpoint_kind=kind, actor=viewer.login, takes_calls=takes_calls)
    except people.PersonRefused as exc:
        return json_error(exc.status, exc.error, exc.reason)
    applied = await reload_directory(request, new.agent.login)
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
    applied = await reload_directory(request, agent.login)
    return web.json_response({"agent": {**AgentView.of(agent, busy).to_json(),
                                        "enabled": agent.enabled,
                                        "removed": agent.removed_at is not None},
                              "endpoint_live": applied})


async def _person_changed(
    request: web.Request, change: Callable[[Transaction, int, str], Awaitable[Agent]],
) -> web.Response:
    """``change`` (a web.people change) to the person the URL names, as the viewer; every
    desk hears of it and the answer is the person as the Admin page lists them."""
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    agent_id = int(request.match_info["agent_id"])
    try:
        async with dashboard.store.transaction() as tx:
            agent = await change(tx, agent_id, viewer.login)
            busy = await tx.agents.busy_agent_ids()
    except NotFound:
        return json_error(404, "not_found", f"no agent {agent_id}")
    except people.PersonRefused as exc:
        return json_error(exc.status, exc.error, exc.reason)
    dashboard.events.publish(AGENTS_TOPIC, AgentChanged(agent_id))
    return web.json_response({"agent": AgentView.of(agent, busy).to_json()})


async def rename_agent(request: web.Request) -> web.Response:
    """A person's display name, as cards, boards and the audit log show it."""
    name = (await json_body(request)).get("display_name")
    if not isinstance(name, str):
        return json_error(400, "bad_request", "display_name must be a text")
    return await _person_changed(
        request, lambda tx, agent_id, actor: people.rename(tx, agent_id, name, actor=actor))


async def reset_password(request: web.Request) -> web.Response:
    """A new dashboard password, in this response only; the person's sessions end and
    their open tabs close at once. Not for one's own account: it would sign out the admin
    asking (`switchboard user passwd` does it from the server)."""
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    agent_id = int(request.match_info["agent_id"])
    if agent_id == viewer.agent_id:
        return json_error(409, "own_account", "an admin cannot reset their own password here: "
                          "`switchboard user passwd` on the server does")
    try:
        async with dashboard.store.transaction() as tx:
            agent, password = await people.new_password(tx, dashboard.passwords, agent_id,
                                                        actor=viewer.login)
    except NotFound:
        return json_error(404, "not_found", f"no agent {agent_id}")
    except people.PersonRefused as exc:
        return json_error(exc.status, exc.error, exc.reason)
    dashboard.hub.drop_agent(agent_id, CloseCode.SIGNED_OUT, "password reset")
    return web.json_response({"login": agent.login, "one_time_password": password})


async def set_takes_calls(request: web.Request) -> web.Response:
    """Whether a person takes calls: a supervisor or admin who does not gets no duty
    switch; one who stops goes off duty at once."""
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    agent_id = int(request.match_info["agent_id"])
    takes_calls = (await json_body(request)).get("takes_calls")
    if not isinstance(takes_calls, bool):
        return json_error(400, "bad_request", "takes_calls must be true or false")
    try:
        async with dashboard.store.transaction() as tx:
            agent = await tx.agents.set_takes_calls(agent_id, takes_calls, actor=viewer.login)
            busy = await tx.agents.busy_agent_ids()
    except NotFound:
        return json_error(404, "not_found", f"no agent {agent_id}")
    if not agent.on_duty:
        # Off duty with it: a desk phone's open line is hung up (a tab hangs up its own).
        await dashboard.commands.close_line(agent.id, agent.sip_user)
    dashboard.events.publish(AGENTS_TOPIC, AgentChanged(agent_id))
    return web.json_response({"agent": AgentView.of(agent, busy).to_json()})


async def set_open_line(request: web.Request) -> web.Response:
    """Whether a person's auto-answering desk phone keeps an open line on duty (from
    their next duty on)."""
    open_line = (await json_body(request)).get("open_line")
    if not isinstance(open_line, bool):
        return json_error(400, "bad_request", "open_line must be true or false")
    return await _person_changed(request, lambda tx, agent_id, actor: people.set_open_line(
        tx, agent_id, open_line, actor=actor))


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
