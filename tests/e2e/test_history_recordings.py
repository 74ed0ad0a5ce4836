"""After the call in a real Chromium: the history with filters, a contact's page, and a
recording's waveform drawn on a canvas from the server's peaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from handoff.calls import CallOutcome
from tests.tools_fixtures import ToolServed, finished_call, write_wav
from web.bench.softphone_rig import sign_in

pytestmark = pytest.mark.e2e


async def test_history_filters_and_a_recording_plays_with_its_waveform(
    page: Page, site: ToolServed, screenshots: Path,
) -> None:
    alice = site.people["alice"].id
    wav = write_wav(site.recordings / "call-demo.wav", seconds=4.0)
    recorded = await finished_call(site.store, number="+33123456789", agent_id=alice,
                                   recording=wav)
    await finished_call(site.store, number="+44700900123",
                        outcome=CallOutcome.CALLBACK_REQUESTED)
    await finished_call(site.store, number="+33600000001", agent_id=site.people["bob"].id)
    await sign_in(page, site.origin, "sam", path="/history")

    rows = page.locator("table.calls tbody tr")
    await expect(rows).to_have_count(3)
    await page.select_option("select[name=outcome]", "callback_requested")
    await page.click(".filters button[type=submit]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("+44700900123")
    await page.goto(f"{site.origin}/history")
    await page.screenshot(path=str(screenshots / "history.png"))

    await page.click(f'tr[data-call="{recorded}"] a:has-text("play")')
    await expect(page).to_have_url(f"{site.origin}/calls/{recorded}/recording")
    canvas = page.locator("#waveform")
    await expect(canvas).to_have_attribute("data-buckets", "1000")
    await expect(page.locator("#waveform-status")).to_have_text("4.0 s")
    # Something was drawn: the canvas is not blank.
    painted = await page.evaluate("""() => {
        const c = document.getElementById("waveform");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
        return n;
    }""")
    assert painted > 1000
    duration = await page.evaluate("""() => new Promise(resolve => {
        const a = document.getElementById("player");
        if (a.readyState >= 1) resolve(a.duration);
        else a.addEventListener("loadedmetadata", () => resolve(a.duration));
    })""")
    assert abs(duration - 4.0) < 0.1
    await page.screenshot(path=str(screenshots / "recording.png"))


async def test_an_agent_marks_a_conversation_resolved_from_the_contact_page(
    page: Page, site: ToolServed,
) -> None:
    number = "+33611223344"
    await finished_call(site.store, number=number, agent_id=site.people["alice"].id,
                        outcome=CallOutcome.ABANDONED)
    await sign_in(page, site.origin, "alice", path=f"/contacts/{number}")
    state = page.locator("#conversation-state")
    await expect(state).to_have_text("open")
    await page.click("#resolve")
    await expect(state).to_have_text("resolved")
    await page.click("#call-back")
    await expect(page.locator("#contact-status")).to_contain_text("Your phone rings")
    assert site.callbacks.placed == [(number, site.people["alice"].id, "sb-alice")]
