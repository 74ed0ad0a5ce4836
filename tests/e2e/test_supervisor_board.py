"""The supervisor board in Chromium: a live call's transcript grows as an AI engine posts
its lines over the control API, and the wallboard and the waiting list show a caller
waiting."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from handoff.assistants import EngineKind
from handoff.queues import Strategy
from tests.ai_api_fixtures import FakeCommands
from tests.dashboard_fixtures import Served, free_port, offer_card
from web.ai_api import API_PREFIX, hash_control_token, new_control_token, setup_ai_api
from web.bench.softphone_rig import sign_in

pytestmark = pytest.mark.e2e

TOKEN = new_control_token()
CLOCK = re.compile(r"^\d+:\d{2}$")


@pytest.fixture
async def engine(site: Served) -> AsyncIterator[aiohttp.ClientSession]:
    """An AI engine's side: the control API on the dashboard's store and hub, as the
    product serves it, and a client holding the assistant's token."""
    async with site.store.transaction() as tx:
        await tx.assistants.create(
            name="receptionist", numbers=["2000"], engine=EngineKind.AUDIOSOCKET,
            engine_address="127.0.0.1:9", control_token_hash=hash_control_token(TOKEN))
    app = web.Application()
    setup_ai_api(app, store=site.store, commands=FakeCommands(site.store), hub=site.events)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield client
    finally:
        await runner.cleanup()


async def of_the_receptionist(site: Served, call_id: str) -> None:
    """The call came in on the receptionist's number: its engine's token may post to it."""
    async with site.store.transaction() as tx:
        call = await tx.calls.get(call_id)
        assistant = await tx.assistants.by_name("receptionist")
        assert assistant is not None
        call.assistant_id = assistant.id


async def say(engine: aiohttp.ClientSession, call_id: str, speaker: str, text: str) -> None:
    """A line as an AI engine posts it over the control API."""
    async with engine.post(f"{API_PREFIX}/calls/{call_id}/transcript",
                           json={"speaker": speaker, "text": text}) as response:
        assert response.status == 201, await response.text()


async def test_the_transcript_grows_on_the_board_as_lines_are_posted(
    page: Page, site: Served, engine: aiohttp.ClientSession, screenshots: Path,
) -> None:
    async with site.store.transaction() as tx:  # the wallboard strip, for the picture
        queue = await tx.queues.create(name="Billing", strategy=Strategy.LONGEST_IDLE,
                                       ring_s=15, max_wait_s=120, service_level_s=20,
                                       no_answer_limit=3)
        await tx.queues.set_members(queue.id, [(site.people["alice"].id, 3)])
    handoff = await offer_card(site.store, site.events, caller_name="Jeanne Martin",
                               queue_id=queue.id)
    await of_the_receptionist(site, handoff.call_id)
    await say(engine, handoff.call_id, "ai", "Hello, how can I help?")
    await sign_in(page, site.origin, "sam", path="/supervisor")
    row = page.locator(f'#live-calls tr[data-call="{handoff.call_id}"]')
    await expect(row.locator("td").nth(5)).to_have_text("receptionist · Billing")
    await expect(row.locator("td").nth(4)).to_have_text(CLOCK)  # the duration counts
    await row.get_by_role("button", name="Transcript").click()
    lines = page.locator(f'#live-calls tr[data-transcript-of="{handoff.call_id}"] li')
    await expect(lines).to_have_count(1)
    await expect(lines.nth(0)).to_contain_text("Hello, how can I help?")
    await say(engine, handoff.call_id, "caller", "My invoice is wrong.")
    await say(engine, handoff.call_id, "ai", "Let me find a person for you.")
    await expect(lines).to_have_count(3)
    await expect(lines.nth(1)).to_contain_text("My invoice is wrong.")
    await expect(lines.nth(2)).to_contain_text("Let me find a person for you.")
    # Another call starting re-reads the list; the open transcript stays open and whole.
    await offer_card(site.store, site.events, caller_name="Second Caller",
                     caller_number="+33999999999")
    await expect(page.locator("#live-calls tr[data-call]")).to_have_count(2)
    await expect(lines).to_have_count(3)
    await say(engine, handoff.call_id, "caller", "Thank you.")
    await expect(lines).to_have_count(4)
    await page.screenshot(path=str(screenshots / "board.png"), full_page=True)


async def test_the_wallboard_and_the_waiting_list_show_a_waiting_caller(
    page: Page, site: Served,
) -> None:
    async with site.store.transaction() as tx:
        queue = await tx.queues.create(name="Sales", strategy=Strategy.OFFER_ALL, ring_s=15,
                                       max_wait_s=120, service_level_s=20, no_answer_limit=3)
        await tx.queues.set_members(queue.id, [(site.people["alice"].id, 3)])
    await sign_in(page, site.origin, "sam", path="/supervisor")
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
    await expect(waiting.locator("td").nth(2)).to_have_text("Emergency")
    await expect(page.locator("#waiting-empty")).to_be_hidden()
