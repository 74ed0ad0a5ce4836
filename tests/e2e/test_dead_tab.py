"""A dashboard tab that dies without closing its socket (R11 of issue 16): a real Chromium
frozen with SIGSTOP (a laptop put to sleep, a hung page) keeps its TCP connection open and
its kernel acknowledging, so only the server's WebSocket heartbeat can tell. The server
must drop the tab within a bound set by its heartbeat, and take it back, with a fresh
snapshot, when it wakes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.dashboard_fixtures import Served
from tests.e2e.conftest import CHROMIUM_ARGS
from tests.faults import chromium_pid, frozen_tree
from tests.waiting import until
from web.bench.softphone_rig import sign_in
from web.dashboard import DASHBOARD, DashboardOptions

pytestmark = pytest.mark.e2e

# Short, so the test is; the product's default (20 s) is the same mechanism.
HEARTBEAT_S = 2.0


@pytest.fixture
def dashboard_options() -> DashboardOptions:
    return DashboardOptions(heartbeat_s=HEARTBEAT_S)


def alices_tabs(served: Served) -> int:
    alice = served.people["alice"].id
    return sum(1 for c in served.app[DASHBOARD].hub.clients if c.agent_id == alice)


async def test_a_frozen_tab_is_dropped_by_the_heartbeat_and_resyncs_when_it_wakes(
    served: Served, chromium_path: Path,
) -> None:
    # A browser of its own: freezing the session's shared one would stall other tests.
    marker = f"--switchboard-dead-tab={uuid.uuid4().hex}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_path), args=[*CHROMIUM_ARGS, marker], headless=True)
        try:
            page = await (await browser.new_context()).new_page()
            await sign_in(page, served.origin, "alice")
            await until(lambda: alices_tabs(served) == 1)
            with frozen_tree(chromium_pid(marker)) as frozen:
                await until(lambda: alices_tabs(served) == 0, within=3 * HEARTBEAT_S + 10,
                            step=0.05, why="the server kept a dead tab")
                detected = time.monotonic() - frozen
                print(f"\ndead dashboard tab dropped after {detected:.1f} s "
                      f"(heartbeat {HEARTBEAT_S:.0f} s)")
                # A ping goes out at most one interval after the tab last spoke, and its
                # pong is awaited half an interval: loose, for a loaded machine.
                assert detected <= 3 * HEARTBEAT_S
            # Awake again: the page notices its socket ended, reconnects and is live.
            await until(lambda: alices_tabs(served) == 1, within=30,
                        why="the woken tab did not reconnect")
            await expect(page.locator("body")).to_have_attribute("data-live", "yes")
        finally:
            await browser.close()
