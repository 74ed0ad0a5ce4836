"""The access middleware: sessions, roles, CSRF and Origin, for every request.

Order of the checks matters for what an attacker learns: an undeclared route is refused
before anything else; a WebSocket from another origin is refused before the session is
looked at (403, R20); an anonymous caller gets 401 (or the login page) before its role
is judged; only then are CSRF token and Origin of a state-changing request checked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web

from web.dashboard.access import MUTATING_METHODS, Access, Rule, Shape
from web.dashboard.sessions import Viewer, tokens_match
from web.dashboard.typedefs import DASHBOARD, ROUTE_POLICY, VIEWER, Dashboard
from web.ratelimit import address_key

log = logging.getLogger(__name__)

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

# Marks a response the dashboard produced, for the security headers below.
GUARDED = web.RequestKey("dashboard_guarded", bool)


def content_security_policy(*connect: str) -> str:
    """Scripts and styles only from our own files: even if a caller's name or an AI
    summary slipped into the page as markup, the browser would not run it. `connect`
    adds origins scripts may open connections to (the PBX's SIP WebSocket)."""
    connect_src = " ".join(("'self'", *connect))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect_src}; media-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


SECURITY_HEADERS = {
    "Content-Security-Policy": content_security_policy(),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refuse(status: int, error: str, reason: str, shape: Shape = Shape.API,
           *, headers: dict[str, str] | None = None, request: web.Request | None = None,
           ) -> web.Response:
    """A 4xx the caller can act on: JSON with a reason for scripts, a page for people."""
    if shape is Shape.PAGE and request is not None:
        dashboard = request.app[DASHBOARD]
        html = dashboard.templates.get_template("error.html").render(
            status=status, reason=reason, viewer=request.get(VIEWER), csrf_field=CSRF_FIELD,
        )
        return web.Response(status=status, text=html, content_type="text/html",
                            headers=headers)
    return web.json_response({"error": error, "reason": reason}, status=status,
                             headers=headers)


def same_origin(request: web.Request, origin: str) -> bool:
    return request.headers.get(hdrs.ORIGIN) == origin


def cross_site(request: web.Request, origin: str) -> bool:
    """A state-changing request that a browser says another site started."""
    sent = request.headers.get(hdrs.ORIGIN)
    if sent is not None and sent != origin:
        return True
    return request.headers.get("Sec-Fetch-Site") == "cross-site"


async def submitted_csrf(request: web.Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token is not None:
        return token
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def login_redirect(request: web.Request) -> web.Response:
    location = f"/login?next={quote(request.path_qs, safe='/')}"
    return web.Response(status=303, headers={"Location": location})


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        # 404 or 405: no handler will run, nothing to protect.
        return await handler(request)
    rule = request.app[ROUTE_POLICY].rule_for_route(request.match_info.route)
    if rule is None:
        log.error("%s %s matched a route missing from the access policy; refused",
                  request.method, request.path)
        return refuse(403, "not_in_policy", "this route is not open to anyone")
    if rule.access is Access.OWN_AUTH:
        return await handler(request)
    request[GUARDED] = True
    dashboard = request.app[DASHBOARD]
    if rule.shape is Shape.WEBSOCKET and not same_origin(request, dashboard.origin):
        # Browsers do not apply the same-origin policy to WebSockets, and would attach
        # the agent's cookie to a handshake started by any page: refuse other origins.
        return refuse(403, "cross_origin", "WebSocket from another origin", rule.shape)
    handshake = rule.shape is Shape.WEBSOCKET
    address = address_key(request.remote)
    if handshake and not request.cookies.get(dashboard.cookies.session):
        # An address that keeps opening sockets with no session at all is answered 429,
        # before any lookup; a colleague behind the same address who is signed in
        # sends a session, so is never held up by it (R23).
        retry_after = dashboard.handshakes.retry_after(address)
        if retry_after is not None:
            return refuse(429, "too_many_handshakes",
                          f"too many refused sockets from this address; retry in "
                          f"{retry_after} s", headers={"Retry-After": str(retry_after)})
    viewer = await _viewer(request, dashboard, rule)
    if rule.access is Access.SESSION:
        refusal = _judge(request, rule, viewer)
        if refusal is not None:
            if handshake:
                dashboard.handshakes.failed(address)
            return refusal
    if request.method in MUTATING_METHODS:
        if cross_site(request, dashboard.origin):
            return refuse(403, "cross_origin", "request started by another site", rule.shape,
                          request=request)
        if viewer is not None and rule.access is Access.SESSION and not tokens_match(
            viewer.csrf_token, await submitted_csrf(request)
        ):
            return refuse(403, "csrf", "missing or wrong CSRF token; reload the page",
                          rule.shape, request=request)
    return await handler(request)


async def _viewer(request: web.Request, dashboard: Dashboard, rule: Rule) -> Viewer | None:
    # Static assets are public and numerous: no session lookup (a database read) for each.
    if rule.access is Access.PUBLIC and rule.shape is not Shape.PAGE:
        return None
    viewer = await dashboard.sessions.resolve(request.cookies.get(dashboard.cookies.session))
    if viewer is not None:
        request[VIEWER] = viewer
    return viewer


def _judge(request: web.Request, rule: Rule, viewer: Viewer | None) -> web.StreamResponse | None:
    if viewer is None:
        if rule.shape is Shape.PAGE and request.method == hdrs.METH_GET:
            return login_redirect(request)
        return refuse(401, "signed_out", "sign in first", Shape.API)
    if not rule.allows(viewer.role):
        log.info("agent %s (%s) refused %s %s", viewer.login, viewer.role, request.method,
                 request.path)
        return refuse(403, "forbidden", f"needs the {rule.role} role", rule.shape,
                      request=request)
    return None


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.get(GUARDED) and not isinstance(response, web.WebSocketResponse):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def error_body(error: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A refusal's JSON: the same shape over HTTP and over the dashboard socket."""
    return {"error": error, "reason": reason, **extra}


def json_error(status: int, error: str, reason: str, **extra: Any) -> web.Response:
    return web.json_response(error_body(error, reason, **extra), status=status)
