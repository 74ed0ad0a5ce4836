"""What the after-call, supervisor and admin pages need beyond the store.

The composition root builds the controller only once Asterisk runs, after the routes
exist, so the live services are reached through callables that answer None until then
(the handlers say 503 "starting" meanwhile). ``setup_tools`` is called once by the
composition root; without it those handlers answer 503 as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from handoff.callback import Callbacks
from handoff.supervision import Supervision
from web.dashboard.guard import json_error


def _none() -> None:
    return None


@dataclass(frozen=True)
class Tools:
    # Where the controller keeps finished recordings (calls.recording_path points there);
    # a recording path outside this folder is never served.
    recordings: Path | None = None
    supervision: Callable[[], Supervision | None] = _none
    callbacks: Callable[[], Callbacks | None] = _none
    # Makes the demo carrier call the receptionist; returns the number it called.
    test_call: Callable[[], Awaitable[str]] | None = None
    # Sign-up of a new agent adds a SIP endpoint: the PBX must learn it (None: it
    # learns it at its next start; the admin page says so).
    endpoints_changed: Callable[[], Awaitable[None]] | None = None


TOOLS = web.AppKey("dashboard_tools", Tools)


def setup_tools(app: web.Application, tools: Tools) -> None:
    app[TOOLS] = tools


def tools_of(request: web.Request) -> Tools:
    return request.app.get(TOOLS) or Tools()


def unavailable(what: str) -> web.Response:
    return json_error(503, "unavailable", f"{what} is not available yet (is Asterisk running?)")
