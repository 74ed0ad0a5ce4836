"""The dashboard under test: the real app on a real SQLite store, the real EventHub, a
fake call controller; shared by the unit tests and the browser (e2e) tests. The pieces
the dashboard benchmark serves too live in web.bench.dashboard_site; the tests take
them from here.

Fixtures (the unit and e2e conftests import them): `served`, the dashboard alone;
`site` (tests.tools_fixtures), with its after-call, supervisor and admin tools;
`dashboard_options`, which a test module overrides to serve either with other options;
`dashboard`, whichever of the two the test uses, and `browsers` on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from handoff.events import EventHub
from handoff.store import Store
from handoff.store.models import Agent
from web.bench.dashboard_site import (
    PASSWORD,
    PEOPLE,
    Browser,
    FakeCommands,
    cheap_passwords,
    free_port,
    offer_card,
    open_store,
    seed_people,
)
from web.dashboard import DashboardOptions, setup_dashboard
from web.dashboard.tools import Tools, setup_tools
from web.dashboard.typedefs import SoftphoneSettings
from web.proxies import real_client

__all__ = [
    "PASSWORD", "PEOPLE", "Browser", "Browsers", "FakeCommands", "Served", "audit", "browsers",
    "cheap_passwords", "dashboard", "dashboard_options", "free_port", "offer_card", "on_duty",
    "open_store", "seed_people", "serve_dashboard", "served", "signed_in",
]


@dataclass
class Served:
    """A running dashboard on 127.0.0.1."""

    app: web.Application
    runner: web.AppRunner
    origin: str
    store: Store
    events: EventHub
    commands: FakeCommands
    people: dict[str, Agent]


async def serve_dashboard(
    folder: Path, *, options: DashboardOptions | None = None,
    softphone: SoftphoneSettings | None = None, trusted_proxies: tuple[str, ...] = (),
    tools: Tools | None = None,
) -> AsyncIterator[Served]:
    store = await open_store(folder)
    passwords = cheap_passwords()
    people = await seed_people(store, passwords)
    events = EventHub()
    commands = FakeCommands(events, store)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    # As the product's app has it (web.app.build_app): outermost, before the guard.
    app = web.Application(middlewares=[real_client(trusted_proxies)])
    setup_dashboard(app, store=store, hub=events, commands=commands, origin=origin,
                    secure_cookies=False,
                    options=replace(options, passwords=options.passwords or passwords)
                    if options else DashboardOptions(passwords=passwords),
                    softphone=softphone)
    if tools is not None:
        setup_tools(app, tools)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Served(app, runner, origin, store, events, commands, people)
    finally:
        await runner.cleanup()
        await store.engine.dispose()


@pytest.fixture
def dashboard_options() -> DashboardOptions | None:
    # None: the defaults, with the people's cheap passwords.
    return None


@pytest.fixture
async def served(
    tmp_path: Path, dashboard_options: DashboardOptions | None,
) -> AsyncIterator[Served]:
    async for running in serve_dashboard(tmp_path, options=dashboard_options):
        yield running


Browsers = Callable[[], Browser]


@pytest.fixture
def dashboard(request: pytest.FixtureRequest) -> Served:
    """The dashboard the test uses: `site` where it asks for the tools, else `served`.
    A plain function: pytest-asyncio sets an async fixture up from here, never from
    inside another one's running loop."""
    running: Served = request.getfixturevalue(
        "site" if "site" in request.fixturenames else "served")
    return running


@pytest.fixture
async def browsers(dashboard: Served) -> AsyncIterator[Browsers]:
    """Open as many independent browser profiles as a test needs, on `dashboard`; all
    closed after."""
    opened: list[Browser] = []

    def open_browser() -> Browser:
        browser = Browser(dashboard.origin)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        await browser.close()


async def signed_in(browsers: Browsers, login: str) -> Browser:
    """A new browser profile, signed in as `login`."""
    browser = browsers()
    assert (await browser.login(login)).status == 303
    return browser


async def audit(browser: Browser) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The audit log as the admin page reads it: (actor, action, subject, detail)."""
    async with browser.http.get("/api/admin/audit") as response:
        return [(e["actor"], e["action"], e["subject"], e["detail"])
                for e in (await response.json())["events"]]


async def on_duty(*agents: Browser) -> None:
    for agent in agents:
        await agent.post_json("/api/duty", {"on_duty": True})
