"""The dashboard's route table and its wiring into the application.

Routes are registered *from* the table, so a dashboard route cannot exist without its
access rule; the guard middleware refuses any other route of the app that nobody
declared in the shared RoutePolicy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from aiohttp import hdrs, web

from handoff.agents import AgentRole
from handoff.events import EventHub
from handoff.settings import check_origin
from handoff.store import Store
from web.dashboard import (
    admin,
    admin_assistants,
    admin_pause_reasons,
    admin_queues,
    audit,
    calls_api,
    dispositions_api,
    history,
    kpis,
    sip_blocks_api,
    supervision_api,
    trunks_api,
    views,
    wallboard,
)
from web.dashboard.access import RoutePolicy, Rule, Shape, public, signed_in
from web.dashboard.board import Board
from web.dashboard.feed import Feed
from web.dashboard.guard import add_security_headers, guard
from web.dashboard.hub import DashboardHub, revalidate_forever
from web.dashboard.passwords import Passwords
from web.dashboard.ratelimit import LoginThrottle
from web.dashboard.sessions import Cookies, Sessions
from web.dashboard.typedefs import (
    DASHBOARD,
    ROUTE_POLICY,
    Commands,
    Dashboard,
    DashboardOptions,
    SoftphoneSettings,
)
from web.dashboard.words import template_globals

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
STATIC_PREFIX = "/static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AGENT, SUPERVISOR, ADMIN = AgentRole.AGENT, AgentRole.SUPERVISOR, AgentRole.ADMIN


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    rule: Rule


ROUTES: tuple[Route, ...] = (
    Route("GET", "/login", views.login_page, public()),
    # Public, but throttled and protected by its own login-CSRF token (views.login).
    Route("POST", "/login", views.login, public()),
    Route("POST", "/logout", views.logout, signed_in(AGENT, Shape.PAGE)),
    Route("GET", "/", views.desk_page, signed_in(AGENT, Shape.PAGE)),
    Route("GET", "/supervisor", views.supervisor_page, signed_in(SUPERVISOR, Shape.PAGE)),
    Route("GET", "/admin", views.admin_page, signed_in(ADMIN, Shape.PAGE)),
    Route("GET", "/ws", views.live_updates, signed_in(AGENT, Shape.WEBSOCKET)),
    Route("POST", "/api/duty", views.set_duty, signed_in(AGENT)),
    Route("POST", "/api/presence", views.set_presence, signed_in(AGENT)),
    Route("POST", r"/api/handoffs/{handoff_id:\d+}/accept", views.accept_handoff,
          signed_in(AGENT)),
    Route("POST", r"/api/admin/agents/{agent_id:\d+}/role", views.set_role, signed_in(ADMIN)),
    # After the call (history.py): the guard lets any agent in; the handlers narrow an
    # agent's view to the calls they handled, supervisors and admins see every call.
    Route("GET", "/history", history.history_page, signed_in(AGENT, Shape.PAGE)),
    Route("GET", "/api/history", history.history_api, signed_in(AGENT)),
    Route("GET", r"/contacts/{number:\+?[0-9]{1,20}}", history.contact_page,
          signed_in(AGENT, Shape.PAGE)),
    Route("POST", r"/api/contacts/{number:\+?[0-9]{1,20}}/follow-up", history.set_follow_up,
          signed_in(AGENT)),
    Route("POST", r"/api/contacts/{number:\+?[0-9]{1,20}}/resolve", history.resolve,
          signed_in(AGENT)),
    Route("POST", r"/api/contacts/{number:\+?[0-9]{1,20}}/notes", history.add_contact_note,
          signed_in(AGENT)),
    Route("POST", r"/api/contacts/{number:[^/]{1,64}}/call-back", history.call_back,
          signed_in(AGENT)),
    Route("GET", r"/calls/{call_id:[0-9a-f-]{36}}/recording", history.recording_page,
          signed_in(AGENT, Shape.PAGE)),
    Route("GET", r"/api/calls/{call_id:[0-9a-f-]{36}}/recording.wav", history.recording_audio,
          signed_in(AGENT)),
    Route("GET", r"/api/calls/{call_id:[0-9a-f-]{36}}/peaks", history.recording_peaks,
          signed_in(AGENT)),
    # The supervisor board (supervision_api.py).
    Route("GET", "/api/supervisor/calls", supervision_api.live_calls, signed_in(SUPERVISOR)),
    Route("GET", r"/api/supervisor/calls/{call_id:[0-9a-f-]{36}}/transcript",
          supervision_api.transcript, signed_in(SUPERVISOR)),
    Route("GET", "/api/supervisor/floor", wallboard.floor, signed_in(SUPERVISOR)),
    Route("POST", r"/api/supervisor/calls/{call_id:[0-9a-f-]{36}}/stop", supervision_api.stop,
          signed_in(SUPERVISOR)),
    Route("POST", r"/api/supervisor/calls/{call_id:[0-9a-f-]{36}}/{mode:[a-z_]{1,16}}",
          supervision_api.supervise, signed_in(SUPERVISOR)),
    # Key figures (kpis.py): the page and its CSV, the same figures.
    Route("GET", "/kpis", kpis.kpis_page, signed_in(SUPERVISOR, Shape.PAGE)),
    Route("GET", "/kpis.csv", kpis.kpis_csv, signed_in(SUPERVISOR)),
    # Admin (admin.py).
    Route("POST", "/api/admin/agents", admin.create_agent, signed_in(ADMIN)),
    Route("POST", r"/api/admin/agents/{agent_id:\d+}/takes-calls", admin.set_takes_calls,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/agents/{agent_id:\d+}/name", admin.rename_agent,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/agents/{agent_id:\d+}/password", admin.reset_password,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/agents/{agent_id:\d+}/{action:disable|enable|remove}",
          admin.change_agent, signed_in(ADMIN)),
    Route("GET", "/api/admin/assistants", admin_assistants.assistants, signed_in(ADMIN)),
    Route("POST", "/api/admin/assistants", admin_assistants.create_assistant,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/assistants/{assistant_id:\d+}",
          admin_assistants.update_assistant, signed_in(ADMIN)),
    Route("POST", r"/api/admin/assistants/{assistant_id:\d+}/token",
          admin_assistants.rotate_token, signed_in(ADMIN)),
    Route("POST", r"/api/admin/assistants/{assistant_id:\d+}/{action:disable|enable|remove}",
          admin_assistants.change_assistant, signed_in(ADMIN)),
    Route("GET", "/api/admin/queues", admin_queues.list_queues, signed_in(ADMIN)),
    Route("POST", "/api/admin/queues", admin_queues.add_queue, signed_in(ADMIN)),
    Route("POST", r"/api/admin/queues/{queue_id:\d+}", admin_queues.change_queue,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/queues/{queue_id:\d+}/remove", admin_queues.remove_queue,
          signed_in(ADMIN)),
    Route("GET", "/api/admin/pause-reasons", admin_pause_reasons.list_reasons,
          signed_in(ADMIN)),
    Route("POST", "/api/admin/pause-reasons", admin_pause_reasons.add_reason,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/pause-reasons/{reason_id:\d+}/remove",
          admin_pause_reasons.remove_reason, signed_in(ADMIN)),
    Route("POST", "/api/admin/dispositions", dispositions_api.add_disposition,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/dispositions/{disposition_id:\d+}/remove",
          dispositions_api.remove_disposition, signed_in(ADMIN)),
    # The desk's wrap-up: the list, and the pick for a call the agent handled.
    Route("GET", "/api/dispositions", dispositions_api.list_dispositions, signed_in(AGENT)),
    Route("POST", r"/api/calls/{call_id:[0-9a-f-]{36}}/disposition",
          dispositions_api.pick_disposition, signed_in(AGENT)),
    Route("POST", "/api/admin/test-call", admin.test_call, signed_in(ADMIN)),
    Route("GET", "/api/admin/audit", audit.audit_log, signed_in(ADMIN)),
    Route("GET", "/api/admin/sip-blocks", sip_blocks_api.blocked_addresses, signed_in(ADMIN)),
    Route("POST", r"/api/admin/sip-blocks/{address:[0-9a-fA-F.:]{2,45}}/lift",
          sip_blocks_api.lift_block, signed_in(ADMIN)),
    # Trunks (trunks_api.py): the stored ones change, the settings file's are listed.
    Route("GET", "/api/admin/trunks", trunks_api.list_trunks, signed_in(ADMIN)),
    Route("POST", "/api/admin/trunks", trunks_api.add_trunk, signed_in(ADMIN)),
    Route("POST", r"/api/admin/trunks/{trunk_id:\d+}", trunks_api.change_trunk,
          signed_in(ADMIN)),
    Route("POST", r"/api/admin/trunks/{trunk_id:\d+}/remove", trunks_api.remove_trunk,
          signed_in(ADMIN)),
    # The softphone and the call panel. The guard lets any agent in; each handler then
    # checks that the viewer is the agent on that call (or a supervisor).
    Route("GET", "/api/softphone", calls_api.softphone, signed_in(AGENT)),
    Route("GET", "/api/calls/current", calls_api.current_call, signed_in(AGENT)),
    Route("POST", "/api/calls/{call_id}/end", calls_api.end_call, signed_in(AGENT)),
    Route("POST", "/api/calls/{call_id}/notes", calls_api.add_note, signed_in(AGENT)),
    Route("POST", "/api/calls/{call_id}/return-to-ai", calls_api.return_to_ai,
          signed_in(AGENT)),
    Route("POST", "/api/calls/{call_id}/transfer", calls_api.transfer, signed_in(AGENT)),
)
STATIC_RULE = public(Shape.API)


def route_policy(app: web.Application) -> RoutePolicy:
    """The app's policy, created on first use so the composition root may declare its
    own routes before or after setup_dashboard."""
    if ROUTE_POLICY not in app:
        app[ROUTE_POLICY] = RoutePolicy()
    return app[ROUTE_POLICY]


def setup_dashboard(
    app: web.Application,
    *,
    store: Store,
    hub: EventHub,
    commands: Commands,
    origin: str,
    secure_cookies: bool,
    options: DashboardOptions | None = None,
    softphone: SoftphoneSettings | None = None,
) -> None:
    """Add the agent dashboard (pages, JSON API, live WebSocket) to `app`.

    `origin` is the browser origin the dashboard is served from (scheme://host:port);
    WebSocket handshakes and state-changing requests from any other origin are refused.
    `secure_cookies` must be true whenever the dashboard is reached over https.
    `softphone` says where agents' browser softphones register; without it the desk
    works without a phone (cards, but no audio).
    """
    options = options or DashboardOptions()
    origin = check_origin(origin)  # also checked at start-up (handoff.settings)
    if origin.startswith("https://") and not secure_cookies:
        raise ValueError("the dashboard is served over https: secure_cookies must be true")
    board = Board()
    dashboard = Dashboard(
        store=store,
        events=hub,
        commands=commands,
        origin=origin,
        cookies=Cookies(secure=secure_cookies),
        options=options,
        sessions=Sessions(store, times=options.sessions, clock=options.clock),
        passwords=options.passwords or Passwords(),
        throttle=LoginThrottle(failures=options.login_failures,
                               window_s=options.login_window_s),
        board=board,
        hub=DashboardHub(board, limits=options.hub, clock=options.clock),
        templates=jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        ),
        softphone=softphone,
    )
    dashboard.templates.globals.update(template_globals(options.site))
    app[DASHBOARD] = dashboard
    policy = route_policy(app)
    for route in ROUTES:
        added = app.router.add_route(route.method, route.path, route.handler)
        # The policy is keyed by the canonical pattern ("/api/handoffs/{handoff_id}/
        # accept", without the regex), the form the middleware sees for a matched route.
        assert added.resource is not None
        policy.declare(route.method, added.resource.canonical, route.rule)
    policy.declare(hdrs.METH_GET, STATIC_PREFIX, STATIC_RULE)
    app.router.add_static(STATIC_PREFIX + "/", STATIC_DIR, follow_symlinks=False)
    app.middlewares.append(guard)
    app.on_response_prepare.append(add_security_headers)
    app.cleanup_ctx.append(_dashboard_ctx)
    app.on_shutdown.append(_close_sockets)


async def _dashboard_ctx(app: web.Application) -> AsyncIterator[None]:
    """The feed from the domain's events and the session sweep live as long as the app."""
    dashboard = app[DASHBOARD]
    feed = Feed(dashboard.store, dashboard.events, dashboard.board, dashboard.hub.publish)
    ready = asyncio.Event()
    tasks = [
        asyncio.create_task(feed.run(ready), name="dashboard feed"),
        asyncio.create_task(
            revalidate_forever(dashboard.hub, dashboard.sessions.still_live,
                               every_s=dashboard.options.revalidate_every_s,
                               purge=dashboard.sessions.purge_expired),
            name="dashboard session sweep",
        ),
    ]
    # Serve only once the board holds what the store has: the first snapshot a tab
    # gets must already show the cards on offer.
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([waiter, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, waiter, return_exceptions=True)
        tasks[0].result()  # re-raises why the feed could not start
    try:
        yield
    finally:
        dashboard.hub.close_all()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("%s ended with %r", task.get_name(), result)


async def _close_sockets(app: web.Application) -> None:
    # Before aiohttp waits for handlers to finish: each socket's handler then closes
    # its WebSocket with "going away", and the page reconnects to the next process.
    app[DASHBOARD].hub.close_all()
