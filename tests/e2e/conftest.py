"""Browser fixtures: Debian's Chromium driven by Playwright, one browser per session.

Never `playwright install`: the browser is the distribution's package, so the tests run
offline and on the same Chromium build an operator would have.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.dashboard_fixtures import browsers, dashboard, dashboard_options, served
from tests.tools_fixtures import site

__all__ = ["browsers", "dashboard", "dashboard_options", "served", "site"]

CHROMIUM = Path(os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # The softphone's getUserMedia gets a fake microphone and no permission prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
# Written under build/ (ignored by git), so a test run leaves the checkout as it was;
# `make screenshots` copies them over the README's pictures in tests/e2e/screenshots.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that takes a picture is one `make screenshots` runs (`-m screenshots`).
    for item in items:
        if "screenshots" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.screenshots)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    # A missing browser fails the browser tests, saying why, in every run: a skip would
    # pass a run that never tried them.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (`make test` does it)",
                    pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="session")
async def chromium(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def context(chromium: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile per test: no cookie or storage carries over."""
    context = await chromium.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(10_000)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
