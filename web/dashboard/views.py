"""Dashboard handlers: sign-in, the agent desk, duty, presence, accept, admin, the socket.

Access is already decided by the guard middleware when a handler runs; handlers only
do their own work and say why when they refuse (4xx JSON with a reason).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from handoff.agents import AgentRole, EndpointKind, Presence
from handoff.events import AGENTS_TOPIC, AgentChanged
from handoff.live import AgentUnreachable, CallStateConflict, LineRefused
from handoff.states import InvalidTransition
from handoff.store import AgentBusy, AlreadyTaken, NotFound, NotOfferable, OffDuty
from web import pause_reasons
from web.dashboard.board import AgentView
from web.dashboard.feed import agent_view
from web.dashboard.guard import CSRF_FIELD, content_security_policy, error_body, json_error
from web.dashboard.hub import Client, CloseCode, Resume
from web.dashboard.sessions import Viewer, new_token, tokens_match
from web.dashboard.softphone import softphone_url, websocket_origin
from web.dashboard.typedefs import DASHBOARD, VIEWER, Dashboard
from web.dashboard.words import ACTIONS
from web.ratelimit import address_key, login_key

log = logging.getLogger(__name__)

# Longest a close handshake with a tab may take before its connection is cut.
CLOSE_TIMEOUT_S = 2.0
MAX_LOGIN_LENGTH = 64


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    dashboard = request.app[DASHBOARD]
    html = dashboard.templates.get_template(template).render(
        viewer=request.get(VIEWER), csrf_field=CSRF_FIELD, **context
    )
    return web.Response(status=status, text=html, content_type="text/html")


def see_other(location: str) -> web.Response:
    # Returned, not raised: aiohttp 4 drops the Response side of HTTP exceptions, and
    # these redirects carry cookies.
    return web.Response(status=303, headers={"Location": location})


def safe_next(target: str | None) -> str:
    """Only a path on this site: never `//evil.example` or `https://...` (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "bad_json", "reason": "the body is not JSON"}',
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "bad_json", "reason": "the body is not a JSON object"}',
            content_type="application/json",
        )
    return body


# ---- sign-in ---------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    if request.get(VIEWER) is not None:
        return see_other(safe_next(request.query.get("next")))
    return _login_form(request)


def _login_form(request: web.Request, *, status: int = 200, error: str = "",
                login: str = "", retry_after: int | None = None) -> web.Response:
    dashboard = request.app[DASHBOARD]
    # Login CSRF: the form carries a token that must match a cookie set with it, so
    # another site cannot sign this browser in as the attacker's account.
    token = new_token()
    response = render(request, "login.html", status=status, error=error, login=login,
                      login_token=token, next=safe_next(request.query.get("next")))
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    dashboard.cookies.set(response, dashboard.cookies.login, token)
    return response


async def login(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    form = await request.post()
    login_name, password, token, next_path = (
        value if isinstance(value := form.get(name), str) else ""
        for name in ("login", "password", CSRF_FIELD, "next")
    )
    login_name = login_name.strip()[:MAX_LOGIN_LENGTH]
    if not tokens_match(request.cookies.get(dashboard.cookies.login, ""), token or None):
        return _login_form(request, status=403, error="The form expired; please sign in again.",
                           login=login_name)
    keys = (login_key(login_name, request.remote), address_key(request.remote))
    retry_after = dashboard.throttle.retry_after(*keys)
    if retry_after is not None:
        # Refused before the password is checked: guessing on does not even cost us a hash.
        return _login_form(request, status=429, login=login_name, retry_after=retry_after,
                           error=f"Too many failed sign-ins. Try again in {retry_after} s.")
    async with dashboard.store.transaction() as tx:
        agent = await tx.agents.by_login(login_name) if login_name else None
    verdict = await dashboard.passwords.verify(agent.password_hash if agent else None, password)
    if agent is None or not verdict.ok:
        dashboard.throttle.failed(*keys)
        async with dashboard.store.transaction() as tx:
            await tx.audit.record(login_name or "-", "login_failed", "dashboard",
                                  {"address": request.remote or ""})
        return _login_form(request, status=401, error="Wrong login or password.",
                           login=login_name)
    dashboard.throttle.succeeded(keys[0])
    if not agent.enabled:
        # The right password, so saying why costs nothing and saves a call to the admin.
        async with dashboard.store.transaction() as tx:
            await tx.audit.record(agent.login, "login_refused", f"agent:{agent.id}",
                                  {"address": request.remote or "", "why": "disabled"})
        return _login_form(request, status=403, login=login_name,
                           error="This account is disabled; ask an admin.")
    token, _ = await dashboard.sessions.start(
        agent.id, replacing=request.cookies.get(dashboard.cookies.session)
    )
    async with dashboard.store.transaction() as tx:
        if verdict.needs_rehash:
            await tx.agents.set_password_hash(agent.id, dashboard.passwords.hash(password))
        await tx.audit.record(agent.login, "login", f"agent:{agent.id}",
                              {"address": request.remote or ""})
    log.info("agent %s signed in to the dashboard", agent.login)
    response = see_other(safe_next(next_path))
    dashboard.cookies.set(response, dashboard.cookies.session, token)
    dashboard.cookies.clear(response, dashboard.cookies.login)
    return response


async def logout(request: web.Request) -> web.Response:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    others = await dashboard.sessions.end(viewer.session_hash)
    dashboard.hub.drop_session(viewer.session_hash)
    async with dashboard.store.transaction() as tx:
        await tx.audit.record(viewer.login, "logout", f"agent:{viewer.agent_id}")
        off = None
        if others == 0 and viewer.on_duty:
            # Signed out everywhere: no card may be offered to a desk nobody sits at.
            off = await tx.agents.set_duty(viewer.agent_id, False, actor=viewer.login,
                                           why="signed out")
    if off is not None:
        # A desk phone's open line goes with the duty (a browser's tab is closing anyway).
        await dashboard.commands.close_line(off.id, off.sip_user)
    dashboard.events.publish(AGENTS_TOPIC, AgentChanged(viewer.agent_id))
    response = see_other("/login")
    dashboard.cookies.clear(response, dashboard.cookies.session)
    return response


# ---- pages -----------------------------------------------------------------------------


async def desk_page(request: web.Request) -> web.Response:
    async with request.app[DASHBOARD].store.transaction() as tx:
        reasons = [pause_reasons.view(r) for r in await tx.pause_reasons.listed()]
    response = render(request, "desk.html", pause_reasons=reasons)
    phone = softphone_url(request)
    if phone is not None:
        # The softphone's SIP WebSocket goes to the PBX, another origin than ours.
        response.headers["Content-Security-Policy"] = content_security_policy(
            websocket_origin(phone))
    return response


async def supervisor_page(request: web.Request) -> web.Response:
    return render(request, "supervisor.html")


async def admin_page(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    # As the feed builds them, so the table starts from the picture its socket's
    # agent_changed deltas then keep up to date.
    async with dashboard.store.transaction() as tx:
        busy = await tx.agents.busy_agent_ids()
        everyone = await tx.agents.all()
        agents = [await agent_view(tx, agent, busy) for agent in everyone]
    disabled = {agent.id for agent in everyone if not agent.enabled}
    # Desk phones' open-line option (browser phones have the server's desk.open_line).
    desk_lines = {agent.id: agent.open_line for agent in everyone
                  if agent.endpoint_kind is EndpointKind.DESKPHONE}
    return render(request, "admin.html", agents=agents, disabled=disabled,
                  desk_lines=desk_lines, roles=[r.value for r in AgentRole], actions=ACTIONS)


# ---- agent actions ---------------------------------------------------------------------


async def set_duty(request: web.Request) -> web.Response:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    on_duty = (await json_body(request)).get("on_duty")
    if not isinstance(on_duty, bool):
        return json_error(400, "bad_request", "on_duty must be true or false")
    if on_duty and not await _takes_calls(dashboard, viewer.agent_id):
        return json_error(409, "takes_no_calls",
                          "You take no calls (an admin can change that on the Admin page).")
    if on_duty:
        unplugged = await _unregistered_desk_phone(dashboard, viewer.agent_id)
        if unplugged is not None:
            return json_error(409, "phone_unregistered", unplugged)
    async with dashboard.store.transaction() as tx:
        # On duty from offline is available (handoff.agents.PRESENCE); off duty is offline.
        agent = await tx.agents.set_duty(viewer.agent_id, on_duty, actor=viewer.login)
        me = await agent_view(tx, agent, await tx.agents.busy_agent_ids())
    if not on_duty:
        # Off duty hangs up the agent's open line (the tab asks for one on duty).
        await dashboard.commands.close_line(agent.id, agent.sip_user)
    elif agent.endpoint_kind is EndpointKind.DESKPHONE and agent.open_line:
        await _open_desk_line(dashboard, agent.id, agent.sip_user)
    dashboard.events.publish(AGENTS_TOPIC, AgentChanged(viewer.agent_id))
    return web.json_response({"me": me.to_json()})


async def _open_desk_line(dashboard: Dashboard, agent_id: int, sip_user: str) -> None:
    """On duty calls an auto-answering desk phone for its open line (a browser's tab
    asks for its own). Duty stands if it cannot: a line that failed is down, so the phone
    watch sets the agent away after its grace, as for a phone that cannot ring (an
    Accept meanwhile rings the phone); with lines off, or the controller still starting,
    Accept rings."""
    if not dashboard.commands.open_lines:
        return
    try:
        await dashboard.commands.open_line(agent_id, sip_user, desk_phone=True)
    except (LineRefused, web.HTTPServiceUnavailable) as exc:
        log.warning("agent=%s: no open line to desk phone %s: %s", agent_id, sip_user, exc)


async def _takes_calls(dashboard: Dashboard, agent_id: int) -> bool:
    async with dashboard.store.transaction() as tx:
        return (await tx.agents.get(agent_id)).takes_calls


async def _unregistered_desk_phone(dashboard: Dashboard, agent_id: int) -> str | None:
    """What is wrong with the agent's desk phone, if the PBX says it cannot ring.

    A card accepted on a phone that cannot ring leaves a caller waiting. A browser phone
    checks its own registration before the tab asks to go on duty; a desk phone cannot
    speak for itself, so the PBX is asked. When the PBX cannot tell, duty is not refused.
    """
    async with dashboard.store.transaction() as tx:
        agent = await tx.agents.get(agent_id)
    if agent.endpoint_kind is not EndpointKind.DESKPHONE:
        return None
    if await dashboard.commands.phone_registered(agent.sip_user) is not False:
        return None
    return (f"Your desk phone ({agent.sip_user}) is not registered with the phone system: "
            "check that it is plugged in and signed in, then try again.")


async def set_presence(request: web.Request) -> web.Response:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    body = await json_body(request)
    try:
        presence = Presence(str(body.get("presence")))
    except ValueError:
        choices = ", ".join(p.value for p in Presence)
        return json_error(400, "bad_request", f"presence is one of {choices}")
    reason_id = body.get("pause_reason_id")
    if reason_id is not None and presence is not Presence.AWAY:
        return json_error(400, "bad_request", "a pause reason goes with away only")
    async with dashboard.store.transaction() as tx:
        if presence is Presence.AVAILABLE and await tx.dispositions.owed_by(viewer.agent_id):
            # Their queue requires one: the figures need it before the next caller.
            # (The controller's wrap-up limit still makes them available without it.)
            return json_error(409, "disposition_needed",
                              "Pick a disposition for your last call first.")
        try:
            reason = None if reason_id is None else await pause_reasons.live(tx, reason_id)
            agent = await tx.agents.set_presence(viewer.agent_id, presence, actor=viewer.login,
                                                 pause_reason=reason)
        except pause_reasons.PauseReasonRefused as exc:
            return json_error(404 if exc.error == "not_found" else 400, exc.error, exc.reason)
        except InvalidTransition:
            # Off duty is offline: going on duty is where the desk's phone is checked.
            return json_error(409, "off_duty", "Go on duty before choosing a presence.")
        me = await agent_view(tx, agent, await tx.agents.busy_agent_ids())
    if presence is Presence.OFFLINE:
        # Offline is off duty: the open line is hung up, as by the duty switch.
        await dashboard.commands.close_line(agent.id, agent.sip_user)
    dashboard.events.publish(AGENTS_TOPIC, AgentChanged(viewer.agent_id))
    return web.json_response({"me": me.to_json()})


async def accept_handoff(request: web.Request) -> web.Response:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    status, body = await accept_card(dashboard, viewer, int(request.match_info["handoff_id"]))
    return web.json_response(body, status=status)


async def accept_card(
    dashboard: Dashboard, viewer: Viewer, handoff_id: int
) -> tuple[int, dict[str, Any]]:
    """The agent takes a card: (HTTP status, body), for the POST route and the socket alike.

    Whether the agent is on duty is decided by the accept's own UPDATE, not by what the
    viewer said when its session was read: a socket's viewer dates from its handshake.
    """
    try:
        with dashboard.timelines.timing(handoff_id):
            # Shielded: a tab closing mid-accept must not cancel a dial half made.
            await asyncio.shield(dashboard.commands.accept(handoff_id, viewer.agent_id))
    except OffDuty:
        return _refusal(409, "off_duty", "go on duty before accepting calls")
    except AgentBusy as exc:
        return _refusal(409, "busy", busy_reason(exc))
    except AlreadyTaken as exc:
        winner = await _agent_view(dashboard, exc.taken_by)
        name = winner.display_name if winner else f"agent {exc.taken_by}"
        return _refusal(409, "already_taken", f"{name} already took this call",
                        taken_by={"id": exc.taken_by, "display_name": name})
    except NotOfferable as exc:
        return _refusal(409, "not_offerable", f"this card is {exc.state.value}",
                        state=exc.state.value)
    except NotFound:
        return _refusal(404, "not_found", "no such handoff, or its call has ended")
    except CallStateConflict as exc:
        return _refusal(409, "call_not_live", str(exc))
    except AgentUnreachable:
        # The accept was rolled back, so the card is still on offer for the others.
        return _refusal(409, "phone_unreachable",
                        "your phone could not be reached; is the softphone registered?")
    log.info("agent %s accepted handoff %s", viewer.login, handoff_id)
    return 200, {"accepted": handoff_id}


def busy_reason(exc: AgentBusy) -> str:
    if exc.why == "in wrap-up":
        return "you are in wrap-up: choose Available to take calls again"
    return "you are already on a call (or one is being put through to you)"


def _refusal(status: int, error: str, reason: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, error_body(error, reason, **extra)


async def _agent_view(dashboard: Dashboard, agent_id: int) -> AgentView | None:
    known = dashboard.board.agents.get(agent_id)
    if known is not None:
        return known
    async with dashboard.store.transaction() as tx:
        try:
            return await agent_view(tx, await tx.agents.get(agent_id),
                                    await tx.agents.busy_agent_ids())
        except NotFound:
            return None


# ---- admin -----------------------------------------------------------------------------


async def set_role(request: web.Request) -> web.Response:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    agent_id = int(request.match_info["agent_id"])
    try:
        role = AgentRole(str((await json_body(request)).get("role")))
    except ValueError:
        choices = ", ".join(r.value for r in AgentRole)
        return json_error(400, "bad_request", f"role is one of {choices}")
    if agent_id == viewer.agent_id:
        return json_error(409, "own_role", "an admin cannot change their own role")
    async with dashboard.store.transaction() as tx:
        try:
            before = await tx.agents.get(agent_id)
        except NotFound:
            return json_error(404, "not_found", f"no agent {agent_id}")
        agent = await tx.agents.set_role(agent_id, role)
        await tx.audit.record(viewer.login, "role_change", f"agent:{agent_id}",
                              {"from": before.role.value, "to": role.value})
        view = AgentView.of(agent, await tx.agents.busy_agent_ids())
    # Their open tabs were sent what the old role could see: make them start afresh.
    dashboard.hub.drop_agent(agent_id, CloseCode.ROLE_CHANGED, "role changed")
    dashboard.events.publish(AGENTS_TOPIC, AgentChanged(agent_id))
    return web.json_response({"agent": view.to_json()})


# ---- the live channel ------------------------------------------------------------------


async def live_updates(request: web.Request) -> web.StreamResponse:
    dashboard, viewer = request.app[DASHBOARD], request[VIEWER]
    options = dashboard.options
    # No permessage-deflate: cards are small, and compressing every card once per tab
    # costs the server more CPU than the bytes it saves on a LAN.
    ws = web.WebSocketResponse(heartbeat=options.heartbeat_s,
                               max_msg_size=options.ws_max_message_bytes, compress=False)
    if not ws.can_prepare(request).ok:
        return json_error(400, "not_websocket", "this address speaks WebSocket only")
    await ws.prepare(request)
    resume = Resume.parse(request.query.get("since"), request.query.get("epoch"))
    # The raw connection lets the hub write pre-framed deltas itself (the frames are the
    # plain bytes because compression is off).
    raw = request.transport if isinstance(request.transport, asyncio.Transport) else None
    client = dashboard.hub.connect(agent_id=viewer.agent_id, role=viewer.role,
                                   session_hash=viewer.session_hash, resume=resume, raw=raw)
    try:
        await client.serve(ws, _read(ws, client, dashboard, viewer, options.ws_messages_per_10s),
                           options.hub.send_timeout_s)
        if not client.stopped:
            client.stop(CloseCode.GOING_AWAY, "")
    finally:
        dashboard.hub.disconnect(client)
        await _close(ws, request, client.close_code, client.close_reason)
    return ws


async def _read(
    ws: web.WebSocketResponse, client: Client, dashboard: Dashboard, viewer: Viewer,
    per_10s: int,
) -> None:
    """The page's requests, answered in order; a tab flooding us is closed (R23)."""
    loop = asyncio.get_running_loop()
    window_start, count = loop.time(), 0
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            return
        now = loop.time()
        if now - window_start > 10.0:
            window_start, count = now, 0
        count += 1
        if count > per_10s:
            log.warning("agent %s's tab sent %d messages in 10 s; closing it",
                        viewer.login, count)
            client.stop(CloseCode.POLICY, "too many messages")
            return
        if message.type is WSMsgType.TEXT:
            client.offer(await _answer(message.data, dashboard, viewer))


# What a tab may ask over its socket: Accept, the one click where every millisecond is a
# caller waiting. The socket was signed in and its Origin checked at the handshake, and it
# is closed when its role changes or its session ends (at once at sign-out, at the next
# session check otherwise), so a request on it needs no cookie, CSRF token or session
# read: the click reaches the call controller sooner than a POST would (the POST stays,
# for a tab whose socket is reconnecting).
SOCKET_REQUEST_SHAPE = '{"type": "accept", "handoff_id": N, "ref": N}'


async def _answer(text: str, dashboard: Dashboard, viewer: Viewer) -> str:
    """The reply to one socket request: {"type": "reply", "ref", "status", "body"}, where
    status and body are what the same request over HTTP would have got."""
    try:
        request = json.loads(text)
    except ValueError:
        request = None
    ref = request.get("ref") if isinstance(request, dict) else None
    if not _is_count(ref):
        ref = None
    if not isinstance(request, dict) or request.get("type") != "accept":
        status, body = _refusal(400, "bad_request", f"a request is {SOCKET_REQUEST_SHAPE}")
    elif not _is_count(request.get("handoff_id")):
        status, body = _refusal(400, "bad_request", "handoff_id is a whole number above 0")
    else:
        status, body = await accept_card(dashboard, viewer, request["handoff_id"])
    return json.dumps({"type": "reply", "ref": ref, "status": status, "body": body})


def _is_count(value: object) -> bool:
    # bool is an int to Python, and not a count to anyone.
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**53


async def _close(ws: web.WebSocketResponse, request: web.Request, code: int, reason: str
                 ) -> None:
    if ws.closed:
        return
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode(), drain=False),
                               CLOSE_TIMEOUT_S)
    except (TimeoutError, ConnectionError):
        # A stalled peer does not read our close frame either: cut the connection.
        if request.transport is not None:
            request.transport.abort()
