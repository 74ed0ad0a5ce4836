"""The dashboard's dependencies and app-scoped objects, typed in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import jinja2
from aiohttp import web

from handoff.events import EventHub
from handoff.live.timeline import AcceptTimelines
from handoff.store import Store
from handoff.store.transitions import utc_now
from web.dashboard.access import RoutePolicy
from web.dashboard.board import Board
from web.dashboard.hub import DashboardHub, HubLimits
from web.dashboard.passwords import Passwords
from web.dashboard.sessions import Cookies, Sessions, SessionTimes, Viewer
from web.dashboard.words import Site
from web.ratelimit import LoginThrottle


class Commands(Protocol):
    """What the dashboard asks of the call controller (handoff.live.CallControl).

    `accept` raises handoff.store.AlreadyTaken (with `.taken_by`) when another agent won,
    NotOfferable when the card was withdrawn or is targeted at someone else, NotFound
    when the handoff or its call is gone.
    """

    async def accept(self, handoff_id: int, agent_id: int) -> None: ...

    # The call panel. Each raises handoff.store.NotFound when the call is not live (here
    # or on the node of a cluster that holds it), CallStateConflict when its state does
    # not allow the command, NodeUnanswered when that other node did not answer; `transfer`
    # raises AgentNotAvailable when the colleague cannot take calls, and returns the
    # handoff id.
    async def end_call(self, call_id: str) -> None: ...

    async def return_to_ai(self, call_id: str) -> None: ...

    async def transfer(self, call_id: str, from_agent: int, to_agent: int, note: str) -> int: ...

    # A transfer to a queue's members; raises handoff.live.QueueNotAvailable when the
    # queue is removed or none of its members is present.
    async def transfer_to_queue(self, call_id: str, from_agent: int, queue_id: int,
                                note: str) -> int: ...

    # Going on duty with a desk phone: is it registered with the PBX (None: cannot tell)?
    async def phone_registered(self, sip_user: str) -> bool | None: ...

    # The open line of a browser-phone agent, or of a desk phone that auto-answers
    # (handoff.live.lines): whether this server gives them one; call their phone for it
    # (returns its state; raises handoff.live.LineRefused); hang it up when they go off
    # duty.
    @property
    def open_lines(self) -> bool: ...

    async def open_line(self, agent_id: int, sip_user: str, *, desk_phone: bool = False
                        ) -> str: ...

    async def close_line(self, agent_id: int, sip_user: str) -> None: ...


@dataclass(frozen=True)
class SoftphoneSettings:
    """Where the agents' browser softphones register (SIP over WebSocket on the PBX).

    A callable rather than a value: the composition root sets up the routes before
    Asterisk runs, and the PBX's HTTP port is known only once it has started (or been
    re-attached). It returns None while there is no PBX to register with.
    """

    websocket_url: Callable[[], str | None]


@dataclass(frozen=True)
class DashboardOptions:
    sessions: SessionTimes = field(default_factory=SessionTimes)
    hub: HubLimits = field(default_factory=HubLimits)
    login_failures: int = 5
    # Failed sign-ins from one address, any logins, before it is refused (ratelimit).
    address_failures: int = 50
    login_window_s: float = 300.0
    # How often open sockets are checked against the session table.
    revalidate_every_s: float = 30.0
    # Server-side WebSocket ping; a tab that misses the pong is closed, so a laptop
    # lid shut mid-shift does not leave a ghost subscriber behind.
    heartbeat_s: float = 20.0
    # The page sends next to nothing: a large frame is an attack or a bug.
    ws_max_message_bytes: int = 4096
    # Messages a tab may send per 10 s before it is closed (it needs none today).
    ws_messages_per_10s: int = 20
    # Socket handshakes refused (no session) per address and minute before that
    # address's sessionless handshakes are answered 429 (web.dashboard.guard).
    ws_refused_per_minute: int = 30
    passwords: Passwords | None = None
    clock: Callable[[], datetime] = utc_now
    # The zone pages show times in and the country whose numbers people type
    # (desk.time_zone, asterisk.country).
    site: Site = field(default_factory=Site.of)


@dataclass
class Dashboard:
    """Everything the dashboard's handlers use, built once by setup_dashboard."""

    store: Store
    events: EventHub
    commands: Commands
    origin: str
    cookies: Cookies
    options: DashboardOptions
    sessions: Sessions
    passwords: Passwords
    throttle: LoginThrottle
    # Refused socket handshakes, per address (guard).
    handshakes: LoginThrottle
    board: Board
    hub: DashboardHub
    templates: jinja2.Environment
    # None: this installation has no browser softphones (desk phones only, or tests).
    softphone: SoftphoneSettings | None = None
    # Where the last Accepts' time went, stage by stage (handoff.live.timeline).
    timelines: AcceptTimelines = field(default_factory=AcceptTimelines)


DASHBOARD = web.AppKey("dashboard", Dashboard)
# Shared with the composition root: its own routes (status, metrics, the AI API) are
# declared here too, so the access middleware covers the whole application.
ROUTE_POLICY = web.AppKey("route_policy", RoutePolicy)
VIEWER = web.RequestKey("viewer", Viewer)
