"""The admin's "Place a test call" on the running product, as a new user meets it: the
demo carrier's test caller hears the receptionist's greeting, presses 0, and the card
reaches the admin's own Desk; Accept rings the browser phone and the admin hears the
test caller speak, with their own microphone muted, so it is not an echo of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from handoff.calls import CallOutcome
from handoff.handoffs import HandoffState
from handoff.receptionist import PROMPTS
from handoff.store import Store, create_store_engine
from handoff.store.models import Call, Handoff
from tests.product_run import Product, product
from tests.waiting import until
from web.bench.softphone_rig import (
    agent_browser,
    build_softphone_bundle,
    chromium_with_agent_voice,
    on_duty_with_phone,
)

__all__ = ["product"]

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TEST_CALLER_NUMBER = "+15550100000"
# totalAudioEnergy grows by about 0.01 a second while the caller speaks at an ordinary
# level; a muted microphone's echo and the PBX's silence add nothing.
SPEECH_ENERGY = 0.002

@pytest.fixture
async def store(product: Product) -> AsyncIterator[Store]:
    engine = create_store_engine(f"sqlite:///{product.data / 'switchboard.db'}")
    try:
        yield Store(engine)
    finally:
        await engine.dispose()


async def inbound_energy(page: Page) -> float:
    stats = await page.evaluate("window.switchboardPhone.stats()")
    return float(stats["inbound"]["energy"]) if stats and stats["inbound"] else 0.0


async def test_the_admins_test_call_asks_for_a_person_and_the_agent_hears_the_caller(
    product: Product, store: Store, chromium_path: Path, tmp_path: Path,
) -> None:
    build_softphone_bundle()
    await product.start()
    password = await product.new_password("admin")
    async with chromium_with_agent_voice(chromium_path, tmp_path) as browser, \
            agent_browser(browser) as context:
        desk = await context.new_page()
        await on_duty_with_phone(desk, product.url, "admin", password)
        # The Desk holds the phone; the admin page opens beside it, as its link does.
        admin = await context.new_page()
        await admin.goto(f"{product.url}/admin")
        await admin.click("#test-call")
        await expect(admin.locator("#admin-status")).to_contain_text("presses 0")

        # The greeting takes a few seconds before the test caller asks for a person.
        card = desk.locator("li.card", has_text="Test Caller")
        await expect(card).to_be_visible(timeout=45_000)
        await card.get_by_role("button", name="Accept").click()
        await expect(desk.locator("#call")).to_be_visible()
        await expect(desk.locator("#call-caller")).to_have_text("Test Caller")
        await expect(desk.locator("#call-transcript")).to_contain_text("[pressed 0]")

        async def call_of_test_caller() -> Call | None:
            async with store.transaction() as tx:
                calls = [c for c in await tx.calls.open_calls()
                         if c.caller_number == TEST_CALLER_NUMBER]
            return calls[0] if calls else None

        call = await until(call_of_test_caller)

        async def connected() -> Handoff | None:
            async with store.transaction() as tx:
                handoffs = list(await tx.handoffs.for_call(call.id))
            return handoffs[0] if handoffs and handoffs[0].state is HandoffState.CONNECTED \
                else None

        handoff = await until(connected)
        assert handoff.reason == "caller_asked"
        async with store.transaction() as tx:
            lines = [(str(t.speaker), t.text) for t in await tx.transcripts.for_call(call.id)]
        # It asked for a person once the receptionist had greeted it, as a caller would.
        assert lines[:2] == [("ai", PROMPTS["greeting"]), ("caller", "[pressed 0]")]

        # The AI has left the call; with the admin's microphone muted, whatever still
        # arrives in the browser is the test caller's voice.
        await desk.click("#call-mute")
        await expect(desk.locator("#call-mute")).to_have_attribute("aria-pressed", "true")
        muted = await inbound_energy(desk)

        async def caller_heard() -> bool:
            return await inbound_energy(desk) - muted > SPEECH_ENERGY

        await until(caller_heard)

        await desk.click("#call-end")
        await expect(desk.locator("#call")).to_be_hidden()

        async def ended() -> Call | None:
            async with store.transaction() as tx:
                row = await tx.calls.get(call.id)
            return row if row.outcome is not None else None

        assert (await until(ended)).outcome is CallOutcome.COMPLETED_BY_AGENT
