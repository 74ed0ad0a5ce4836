"""The KPI page in a real Chromium, as a supervisor uses it: a range of days chosen with
the date fields, an assistant chosen, the charts drawn, the CSV downloaded; over the
scripted day of tests/kpi_day.py, whose figures are known."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.dashboard_fixtures import PASSWORD, Served
from tests.kpi_day import DAY, script_day
from web.dashboard.typedefs import DASHBOARD

pytestmark = pytest.mark.e2e


async def test_a_supervisor_reads_a_days_figures_filters_them_and_downloads_the_csv(
    page: Page, served: Served, screenshots: Path,
) -> None:
    zone = served.app[DASHBOARD].options.site.zone
    day = await script_day(served.store, zone, alice=served.people["alice"].id,
                           bob=served.people["bob"].id)
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.goto(f"{served.origin}/login")
    await page.fill("#login", "sam")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.click("nav a:has-text('Key figures')")
    await expect(page).to_have_url(f"{served.origin}/kpis")

    # Today: nothing happened yet.
    containment = page.locator('[data-figure="containment"] .value')
    await expect(containment).to_have_text("\u2013")  # an en dash: no figure
    await page.fill("input[name=from]", str(DAY))
    await page.fill("input[name=to]", str(DAY))
    await page.click("#kpi-filters button[type=submit]")
    await expect(containment).to_have_text("40.0 %")
    await expect(page.locator('[data-figure="accept"] .value')).to_have_text("12 s · 30 s")
    await expect(page.locator('[data-figure="service-level"] .value')).to_have_text("57.1 %")
    await expect(page.locator('#kpi-agents tr[data-agent="Bob"] td').nth(4)).to_have_text(
        "40:00")
    # The charts are pictures the server drew: the reasons in people's words.
    await expect(page.locator("#chart-per-hour rect.bar")).to_have_count(24)
    await expect(page.locator("#chart-reasons rect.bar").first).to_have_attribute(
        "data-label", "Asked for a person")
    await expect(page.locator("#chart-reasons rect.bar").first).to_have_attribute(
        "data-value", "4")
    await expect(page.locator("#chart-per-hour svg")).to_be_visible()
    await page.screenshot(path=str(screenshots / "kpis.png"))

    await page.select_option("select[name=assistant]", str(day.sales))
    await page.click("#kpi-filters button[type=submit]")
    await expect(containment).to_have_text("57.1 %")
    await expect(page.locator('[data-figure="requests"] .value')).to_have_text("3")
    await expect(page.locator("#kpi-queues tbody tr")).to_have_count(1)

    async with page.expect_download() as downloading:
        await page.click("#kpi-csv")
    download = await downloading.value
    assert download.suggested_filename == f"switchboard-kpis-{DAY}-to-{DAY}.csv"
    saved = Path(await download.path())
    text = (await asyncio.to_thread(saved.read_bytes)).decode("utf-8")
    assert "assistant,,sales\r\n" in text
    assert "calls,,7\r\nresolved by the AI alone,,4\r\nAI containment (%),,57.1\r\n" in text
