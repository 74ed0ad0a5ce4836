"""Start-up in the background: the HTTP server listens first, then the database,
Asterisk and the controller come up one after the other, each retried with backoff while
it cannot be reached (R25).

Why: a server whose HTTP port only opens once PostgreSQL and Asterisk answer cannot tell
anyone why it is not working; a process that exits instead makes its supervisor restart
it in a loop. Meanwhile ``/status`` answers 503 naming what it waits for and why, every
other route 503 "starting", and the outage is logged once when it starts and once when
it ends. What is wrong rather than away (a setting, a password Asterisk refuses, a module
it lacks) still stops the process, saying what, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy.exc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pbx.runtime import AsteriskUnreachable

log = logging.getLogger(__name__)

StageContext = Callable[[web.Application], AsyncIterator[None]]
Stage = tuple[str, StageContext]
"""What a stage waits for ("database", "asterisk": said on /status) and its context."""

START_STAGES = web.AppKey("start_stages", list[Stage])
"""The stages the app brings up, in order (web.app.build_app)."""

# Away, not wrong: worth another try. A refused or reset connection, a psycopg
# OperationalError (its wrapping of the same: PostgreSQL down), an Asterisk that does
# not answer ARI yet, ARI not ready in time. Any other OSError (a folder it may not
# write, a port taken) is a setting to fix, and stops start-up.
RETRYABLE: tuple[type[BaseException], ...] = (
    ConnectionError, TimeoutError, sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError, AsteriskUnreachable,
)
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0


@dataclass
class Startup:
    """Where start-up is: what it waits for and why; ``up`` once everything runs."""

    waiting_for: str | None = "database"
    reason: str = "starting"
    up: bool = False
    fatal: BaseException | None = None
    """What stopped start-up for good (re-raised by `run` once the server has stopped)."""
    stop: Callable[[], None] = lambda: None
    """How the process is told to stop after a fatal error (`run` sends itself SIGINT)."""
    attempts: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once start-up is over: up, or stopped by a fatal error."""
    _since: float | None = field(default=None, repr=False)

    def status(self) -> dict[str, Any]:
        return {"waiting_for": self.waiting_for, "reason": self.reason}

    def _failed(self, stage: str, exc: BaseException) -> None:
        self.attempts += 1
        self.reason = f"{type(exc).__name__}: {exc}".strip()[:300]
        if self._since is None:
            self._since = asyncio.get_running_loop().time()
            log.warning("start-up waits for the %s: %s; retrying with backoff up to %.0f s",
                        stage, self.reason, BACKOFF_MAX_S)
        else:
            log.debug("the %s still unreachable (attempt %d): %s", stage, self.attempts,
                      self.reason)

    def _reached(self, stage: str) -> None:
        if self._since is not None:
            log.warning("the %s is reachable after %.1f s and %d failed attempts", stage,
                        asyncio.get_running_loop().time() - self._since, self.attempts)
        self._since, self.attempts = None, 0


async def bring_up(app: web.Application, startup: Startup, stages: list[Stage],
                   stack: contextlib.AsyncExitStack) -> None:
    """Enter each stage's context in order (their exits on ``stack``, for shutdown),
    retrying one that cannot reach what it needs."""
    for waits_for, stage in stages:
        startup.waiting_for, startup.reason = waits_for, "connecting"
        delay = BACKOFF_INITIAL_S
        while True:
            try:
                await stack.enter_async_context(contextlib.asynccontextmanager(stage)(app))
                break
            except RETRYABLE as exc:
                # The stage cleaned up after itself on the way out (each one's own
                # finally), so the next attempt starts from nothing.
                startup._failed(waits_for, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            except Exception as exc:
                log.critical("start-up stopped: %s", exc)
                startup.fatal, startup.reason = exc, str(exc)
                startup.settled.set()
                startup.stop()
                return
        startup._reached(waits_for)
    startup.waiting_for, startup.reason, startup.up = None, "", True
    startup.settled.set()


def background_start(startup: Startup, stages: list[Stage]
                     ) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's one cleanup context: start-up runs beside the server, and shutdown
    stops it wherever it got to, then leaves the stages in reverse order. ``stages`` is
    read when the app starts (a test may leave some out first)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            task = asyncio.create_task(bring_up(app, startup, stages, stack),
                                       name="start-up")
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    return ctx


def while_starting(startup: Startup, open_paths: frozenset[str]) -> Middleware:
    """Every route but ``open_paths`` answers 503 until start-up is done: none can work
    without the store, and a clear "starting" beats a server error."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if startup.up or request.path in open_paths:
            return await handler(request)
        return web.json_response(
            {"error": f"Switchboard is starting: waiting for the {startup.waiting_for}",
             **startup.status()},
            status=503, headers={"Retry-After": "5"})

    return middleware
