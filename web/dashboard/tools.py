"""What the after-call, supervisor and admin pages need beyond the store.

The composition root builds the controller only once Asterisk runs, after the routes
exist, so the live services are reached through callables that answer None until then
(the handlers say 503 "starting" meanwhile). ``setup_tools`` is called once by the
composition root; without it those handlers answer 503 as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from handoff.supervision import Mode, Supervisor
from handoff.trunks import Trunk
from pbx.trunk_status import TrunkStatus
from web.dashboard.guard import json_error


class SupervisorSession(Protocol):
    """A supervisor's phone on a live call (handoff.supervision.Session)."""

    call_id: str
    mode: Mode | None  # None while the supervisor's phone rings

    def to_json(self) -> dict[str, Any]: ...


class SupervisionService(Protocol):
    """What the pages ask of supervision (handoff.supervision.Supervision)."""

    async def supervise(
        self, call_id: str, supervisor: Supervisor, mode: Mode
    ) -> SupervisorSession: ...

    async def stop(self, call_id: str, supervisor: Supervisor) -> None: ...


class CallBack(Protocol):
    """An agent's call-back under way (handoff.callback.Callback)."""

    def to_json(self) -> dict[str, Any]: ...


class CallbackService(Protocol):
    """What the pages ask of call-backs (handoff.callback.Callbacks)."""

    async def call_back(
        self, number: str, *, agent_id: int, endpoint: str, actor: str
    ) -> CallBack: ...

    def of_call(self, call_id: str) -> CallBack | None: ...

    async def end(self, call_id: str) -> bool: ...


def _none() -> None:
    return None


def _no_trunks() -> tuple[Trunk, ...]:
    return ()


def _no_statuses() -> dict[str, TrunkStatus]:
    return {}


@dataclass(frozen=True)
class Tools:
    # Where the controller keeps finished recordings (calls.recording_path points there);
    # a recording path outside this folder is never served.
    recordings: Path | None = None
    supervision: Callable[[], SupervisionService | None] = _none
    callbacks: Callable[[], CallbackService | None] = _none
    # Makes the demo carrier call the receptionist; returns the number it called.
    test_call: Callable[[], Awaitable[str]] | None = None
    # Sign-up of a new agent adds a SIP endpoint: the PBX must learn it (None: it
    # learns it at its next start; the admin page says so).
    endpoints_changed: Callable[[], Awaitable[None]] | None = None
    # A block on a SIP address was lifted: the PBX must answer it again (None: at its
    # next start).
    blocks_changed: Callable[[], Awaitable[None]] | None = None
    # The trunks the store does not keep (the settings file's, the demo carrier's): shown
    # read-only, and their names are not free for a stored trunk.
    fixed_trunks: Callable[[], Sequence[Trunk]] = _no_trunks
    # Each trunk's last known status, by name (web.trunk_watch).
    trunk_statuses: Callable[[], Mapping[str, TrunkStatus]] = _no_statuses


TOOLS = web.AppKey("dashboard_tools", Tools)


def setup_tools(app: web.Application, tools: Tools) -> None:
    app[TOOLS] = tools


def tools_of(request: web.Request) -> Tools:
    return request.app.get(TOOLS) or Tools()


def unavailable(what: str) -> web.Response:
    return json_error(503, "unavailable", f"{what} is not available yet (is Asterisk running?)")
