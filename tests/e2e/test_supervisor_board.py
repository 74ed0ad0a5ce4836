"""The supervisor board in Chromium: a live call's transcript grows as the AI's lines are
posted, and the wallboard and the waiting list show a caller waiting."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from handoff.calls import Speaker
from handoff.events import TranscriptLine, publish_transcript_line
from handoff.queues import Strategy
from tests.dashboard_fixtures import PASSWORD, Served, offer_card, serve_dashboard

pytestmark = pytest.mark.e2e

CLOCK = re.compile(r"^\d+:\d{2}$")


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Served]:
    async for running in serve_dashboard(tmp_path):
        yield running


async def sign_in(page: Page, site: Served, login: str, path: str) -> None:
    await page.goto(f"{site.origin}{path}")
    await page.fill("#login", login)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{site.origin}{path}")
    await expect(page.locator("body")).to_have_attribute("data-live", "yes")


async def say(site: Served, call_id: str, speaker: Speaker, text: str) -> None:
    """A line as the AI control API posts it: stored, then published."""
    async with site.store.transaction() as tx:
        segment = await tx.transcripts.append(call_id, speaker, text)
    publish_transcript_line(site.events, TranscriptLine(
        call_id, segment.speaker.value, segment.text, segment.at.isoformat()))


async def test_the_transcript_grows_on_the_board_as_lines_are_posted(
    page: Page, site: Served,
) -> None:
    handoff = await offer_card(site.store, site.events, caller_name="Jeanne Martin")
    await say(site, handoff.call_id, Speaker.AI, "Hello, how can I help?")
    await sign_in(page, site, "sam", "/supervisor")
    row = page.locator(f'#live-calls tr[data-call="{handoff.call_id}"]')
    await expect(row).to_contain_text("Billing")
    await expect(row.locator("td").nth(4)).to_have_text(CLOCK)  # the duration counts
    await row.get_by_role("button", name="Transcript").click()
    lines = page.locator(f'#live-calls tr[data-transcript-of="{handoff.call_id}"] li')
    await expect(lines).to_have_count(1)
    await expect(lines.nth(0)).to_contain_text("Hello, how can I help?")
    await say(site, handoff.call_id, Speaker.CALLER, "My invoice is wrong.")
    await say(site, handoff.call_id, Speaker.AI, "Let me find a person for you.")
    await expect(lines).to_have_count(3)
    await expect(lines.nth(1)).to_contain_text("My invoice is wrong.")
    await expect(lines.nth(2)).to_contain_text("Let me find a person for you.")
    # Another call starting re-reads the list; the open transcript stays open and whole.
    await offer_card(site.store, site.events, caller_name="Second Caller",
                     caller_number="+33999999999")
    await expect(page.locator("#live-calls tr[data-call]")).to_have_count(2)
    await expect(lines).to_have_count(3)
    await say(site, handoff.call_id, Speaker.CALLER, "Thank you.")
    await expect(lines).to_have_count(4)


async def test_the_wallboard_and_the_waiting_list_show_a_waiting_caller(
    page: Page, site: Served,
) -> None:
    async with site.store.transaction() as tx:
        queue = await tx.queues.create(name="Sales", strategy=Strategy.OFFER_ALL, ring_s=15,
                                       max_wait_s=120, service_level_s=20, no_answer_limit=3)
        await tx.queues.set_members(queue.id, [(site.people["alice"].id, 3)])
    await sign_in(page, site, "sam", "/supervisor")
    sales = page.locator('#wallboard .queue[data-queue="Sales"]')
    await expect(sales.locator('[data-figure="waiting"]')).to_have_text("0")
    await expect(page.locator("#waiting-empty")).to_be_visible()
    handoff = await offer_card(site.store, site.events, caller_name="Queued Caller",
                               priority=10, queue_id=queue.id)
    await expect(sales.locator('[data-figure="waiting"]')).to_have_text("1")
    await expect(sales.locator('[data-figure="longest"]')).to_have_text(
        CLOCK)
    # Its one member is off duty: nobody available, nobody on a call.
    await expect(sales.locator('[data-figure="available"]')).to_have_text("0")
    await expect(sales.locator('[data-figure="on_call"]')).to_have_text("0")
    waiting = page.locator(f'#waiting tr[data-handoff="{handoff.id}"]')
    await expect(waiting).to_contain_text("Queued Caller")
    await expect(waiting).to_contain_text("Sales")
    await expect(waiting).to_have_attribute("data-urgency", "emergency")
    await expect(page.locator("#waiting-empty")).to_be_hidden()
