"""A recording you can navigate, from a real call on a real Asterisk: the AI's part, the
agent's part and the return to the AI are marked on the waveform, the transcript sits
beside it, and a click on a line plays from there. The call is test_softphone's: a
carrier's caller, an AudioSocket AI, and Alice's softphone in Chromium."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect

from handoff.calls import CallOutcome, Speaker
from handoff.handoffs import HandoffState
from tests.e2e.test_softphone import (
    _closed,
    _handoff_in,
    accept_and_talk,
    agent_context,
    on_duty_with_a_card,
    product,
    telephony,
    voiced_chromium,
)
from tests.waiting import until
from web.bench.softphone_rig import Desk, agent_browser, sign_in

__all__ = ["agent_context", "product", "telephony", "voiced_chromium"]

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def _round_trip_timed(product: Desk, leg: str) -> bool:
    stats = await product.control.ari.channels.rtp_statistics(leg)
    return float(stats.get("maxrtt") or 0) > 0


async def _recorded(product: Desk, call_id: str) -> str | None:
    async with product.store.transaction() as tx:
        return (await tx.calls.get(call_id)).recording_path


async def test_a_recording_marks_the_ai_and_the_agents_parts_and_a_line_plays_from_there(
    agent_context: BrowserContext, product: Desk, screenshots: Path,
) -> None:
    page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(page, product)
    # The AI keeps the caller while the card waits a moment on Alice's desk.
    await product.heard(caller, "ai", time.monotonic() + 2, timeout=10)
    await accept_and_talk(page, product, caller, handoff_id)
    await until(lambda: _handoff_in(product, handoff_id, HandoffState.CONNECTED))
    async with product.store.transaction() as tx:
        await tx.transcripts.append(call_id, Speaker.AGENT, "I can change the address for you.")
    # Alice talks until the PBX has timed a round trip on her line (Chromium's RTCP
    # reports come every few seconds), then hands the caller back to the AI.
    leg = product.control.calls[call_id].agent
    assert leg is not None
    await until(lambda: _round_trip_timed(product, leg), 30,
                why="no round trip timed on Alice's line")
    clicked = time.monotonic()
    await page.click("#call-return")
    await product.heard(caller, "ai", clicked, timeout=10)
    await until(lambda: _handoff_in(product, handoff_id, HandoffState.RETURNED_TO_AI))
    async with product.store.transaction() as tx:
        await tx.transcripts.append(call_id, Speaker.AI, "Anything else I can do for you?")
    await product.heard(caller, "ai", time.monotonic() + 2, timeout=10)
    await product.world.hang_up(caller)
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AI
    await until(lambda: _recorded(product, call_id), why="the recording was not kept")

    # Alice handled the call: she may open its recording.
    await page.goto(f"{product.origin}/calls/{call_id}/recording")
    await expect(page.locator("#waveform")).to_have_attribute("data-buckets", "1000")
    parts = page.locator("#parts .part")
    await expect(parts).to_have_count(3)
    assert [await p.get_attribute("data-who") for p in await parts.all()] == [
        "ai", "person", "ai"]
    await expect(parts.nth(0)).to_have_text("The AI answers")
    await expect(parts.nth(1)).to_have_text("Alice answers")
    await expect(parts.nth(2)).to_have_text("Back to the AI")
    # Each mark stands where its part starts on the waveform, in order.
    lefts = [await p.evaluate("node => node.offsetLeft") for p in await parts.all()]
    assert lefts[0] < lefts[1] < lefts[2]
    person_start = float(await parts.nth(1).get_attribute("data-start") or 0)
    back_start = float(await parts.nth(2).get_attribute("data-start") or 0)
    assert 0 < person_start < back_start

    # The transcript beside the waveform, each line where it was said.
    lines = page.locator("#lines li")
    await expect(lines).to_have_count(4)
    agent_line = lines.filter(has_text="I can change the address").locator("button")
    at = float(await agent_line.get_attribute("data-at") or -1)
    assert person_start <= at <= back_start  # said in Alice's part
    await agent_line.click()
    position = await page.evaluate("document.getElementById('player').currentTime")
    assert at <= position < at + 1.5
    await expect(lines.filter(has_text="I can change the address")).to_have_attribute(
        "aria-current", "true")

    # The handoff's quality record: times, and both lines as Asterisk measured them.
    await expect(page.locator(".handoff-times .accept")).to_contain_text(" s")
    await expect(page.locator(".handoff-times .connect")).to_contain_text(" ms")
    await expect(page.locator('.quality tr[data-leg="agent"] .jitter')).to_contain_text("ms")
    await expect(page.locator('.quality tr[data-leg="agent"] .rtt')).to_contain_text("ms")
    await expect(page.locator('.quality tr[data-leg="caller"] .loss')).to_contain_text("%")
    await page.screenshot(path=str(screenshots / "recording-parts.png"), full_page=True)

    # The caller's page shows the same record under the call.
    await page.goto(f"{product.origin}/contacts/{caller}")
    await expect(page.locator('.past-call .quality tr[data-leg="agent"] .rtt')).to_contain_text(
        "ms")
    # Access stays as it was: Bob did not handle the call, so it is not there for him.
    browser = agent_context.browser
    assert browser is not None
    async with agent_browser(browser) as bobs:
        bob = await bobs.new_page()
        await sign_in(bob, product.origin, "bob")
        response = await bob.goto(f"{product.origin}/calls/{call_id}/recording")
        assert response is not None and response.status == 404
        response = await bob.goto(f"{product.origin}/api/calls/{call_id}/recording.wav")
        assert response is not None and response.status == 404
