"""What the eye sees, in a real Chromium: people's states kept live on the admin page,
words instead of codes, greyed-out actions that say why, one time format in the site's
zone, phone examples of the site's country, and no red for what went well."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect

from handoff.agents import CONTROLLER, PresenceEvent
from handoff.calls import CallEvent, CallOutcome
from handoff.events import AGENTS_TOPIC, CARDS_TOPIC, AgentChanged, CallEnded, Taken
from handoff.handoffs import HandoffEvent
from handoff.store.transitions import utc_now
from tests.dashboard_fixtures import (
    Browser,
    Served,
    offer_card,
)
from tests.tools_fixtures import finished_call
from web.bench.softphone_rig import sign_in
from web.dashboard import DashboardOptions
from web.dashboard.words import Site

pytestmark = pytest.mark.e2e

# Half-hour offset and no summer time: a time shown in the server's zone or in UTC
# cannot pass for it by chance.
ZONE = "Asia/Kolkata"
ONE_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")
URGENT_RED = "rgb(198, 40, 40)"


@pytest.fixture
def dashboard_options() -> DashboardOptions:
    return DashboardOptions(site=Site.of(ZONE, "gb"))


async def agent_browser(site: Served, login: str) -> Browser:
    browser = Browser(site.origin)
    assert (await browser.login(login)).status == 303
    return browser


async def test_the_admin_table_shows_an_agent_on_a_call_live_and_counts_down_wrap_up(
    page: Page, site: Served,
) -> None:
    await sign_in(page, site.origin, "ada", path="/admin")
    alice_id = site.people["alice"].id
    state = page.locator(f'#agents tr[data-agent="{alice_id}"] td.agent-state')
    await expect(state).to_have_text("Off duty")

    alice = await agent_browser(site, "alice")
    try:
        await alice.post_json("/api/duty", {"on_duty": True})
        await expect(state).to_have_text("Available")  # no reload: the page's socket
        handoff = await offer_card(site.store, site.events)
        accepted = await alice.post_json(f"/api/handoffs/{handoff.id}/accept", {})
        assert accepted.status == 200
    finally:
        await alice.close()
    site.events.publish(CARDS_TOPIC, Taken(handoff.id, alice_id))
    # Her presence still says available; the table says what she is doing.
    await expect(state).to_have_text("On a call")

    async with site.store.transaction() as tx:
        for event in (HandoffEvent.DIAL_AGENT, HandoffEvent.AGENT_ANSWERED, HandoffEvent.END):
            await tx.handoffs.apply(handoff.id, event)
        await tx.calls.apply(handoff.call_id, CallEvent.AGENT_CONNECTED, agent_channel_id="ag")
        await tx.calls.close(handoff.call_id, CallOutcome.COMPLETED_BY_AGENT)
        # As the controller begins the wrap-up after her part of the call.
        await tx.agents.try_change_presence(
            alice_id, PresenceEvent.WRAP_UP_BEGINS, actor=CONTROLLER,
            ends_at=(utc_now() + timedelta(seconds=90)).isoformat())
    site.events.publish(CARDS_TOPIC, CallEnded(handoff.call_id))
    site.events.publish(AGENTS_TOPIC, AgentChanged(alice_id))
    await expect(state).to_have_text(re.compile(r"^Wrap-up \(1:[23]\d left\)$"))

    # The audit log in sentences, filtered on the server, each time in the one format.
    await page.select_option("#audit-filter select[name=person]", str(alice_id))
    await page.click("#audit-filter button")
    lines = page.locator("#audit tbody tr")
    await expect(lines.filter(has_text="Alice went on duty")).to_have_count(1)
    await expect(lines.filter(has_text="Alice began wrap-up after a call")).to_have_count(1)
    await expect(page.locator("#audit")).not_to_contain_text("agent:")
    await expect(lines.filter(has_text="Ada")).to_have_count(0)
    for when in await page.locator("#audit time").all_inner_texts():
        assert ONE_FORMAT.match(when), when
    await page.fill("#audit-filter input[name=from]", "2026-02-01")
    await page.fill("#audit-filter input[name=to]", "2026-01-01")
    await page.click("#audit-filter button")
    await expect(page.locator("#admin-status")).to_have_text("to is on or after from")


async def test_someone_who_takes_no_calls_gets_no_duty_switch(page: Page, site: Served) -> None:
    async with site.store.transaction() as tx:
        await tx.agents.set_takes_calls(site.people["sam"].id, False, actor="ada")
    await sign_in(page, site.origin, "sam", path="/supervisor")
    await expect(page.locator("#duty")).to_have_count(0)
    await expect(page.locator("#presence")).to_have_count(0)
    await expect(page.locator(".topbar .who")).to_have_text("Sam (Supervisor)")


async def test_a_greyed_out_whisper_says_why_and_the_board_speaks_words(
    page: Page, site: Served,
) -> None:
    handoff = await offer_card(site.store, site.events, caller_name="Jeanne Martin")
    await sign_in(page, site.origin, "sam", path="/supervisor")
    row = page.locator(f'#live-calls tr[data-call="{handoff.call_id}"]')
    await expect(row).to_contain_text("Waiting for a person")
    whisper = row.get_by_role("button", name="Whisper")
    await expect(whisper).to_be_disabled()
    why = "Whisper speaks to the agent only, and this call is with the AI."
    await expect(whisper).to_have_attribute("title", why)
    await expect(whisper).to_have_accessible_description(why)
    listen = row.get_by_role("button", name="Listen")
    await expect(listen).to_be_enabled()
    await expect(listen).not_to_have_attribute("aria-describedby", re.compile("."))
    since = await row.locator("td").nth(3).inner_text()
    assert ONE_FORMAT.match(since), since


async def test_times_are_in_one_format_in_the_sites_zone_and_a_good_end_is_not_red(
    page: Page, site: Served,
) -> None:
    alice_id = site.people["alice"].id
    handled = await finished_call(site.store, number="+33111111111", agent_id=alice_id)
    by_ai = await finished_call(site.store, number="+33222222222",
                                outcome=CallOutcome.COMPLETED_BY_AI)
    failed = await finished_call(site.store, number="+33333333333", outcome=CallOutcome.FAILED)
    async with site.store.transaction() as tx:
        call = await tx.calls.get(handled)
        call.started_at = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)
        await tx.notes.add("Wants a paper invoice", contact_number="+33111111111",
                           author_id=alice_id)
    await sign_in(page, site.origin, "sam", path="/history")
    row = page.locator(f'tr[data-call="{handled}"]')
    # 10:00 UTC is 15:30 in Kolkata.
    await expect(row.locator("time")).to_have_text("2026-01-12 15:30")
    await expect(row.locator(".outcome")).to_have_text("Handled by a person")
    for when in await page.locator("table.calls time").all_inner_texts():
        assert ONE_FORMAT.match(when), when
    for call_id, red in ((handled, False), (by_ai, False), (failed, True)):
        outcome = page.locator(f'tr[data-call="{call_id}"] .outcome')
        color = await outcome.evaluate("node => getComputedStyle(node).color")
        assert (color == URGENT_RED) is red, (call_id, color)
    # Numbers are typed as the site's country writes them.
    await expect(page.locator("input[name=number]")).to_have_attribute("placeholder", "+44…")

    await page.goto(f"{site.origin}/contacts/+33111111111")
    for when in await page.locator(".contact time").all_inner_texts():
        assert ONE_FORMAT.match(when), when
    await page.goto(f"{site.origin}/")
    await expect(page.locator("#notice")).to_have_text("")


async def test_news_on_the_desk_is_not_red_but_a_problem_is(page: Page, site: Served) -> None:
    await sign_in(page, site.origin, "alice")
    await page.check("#duty")
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "yes")
    handoff = await offer_card(site.store, site.events, caller_name="Paul Durand")
    card = page.locator(f'li.card[data-handoff-id="{handoff.id}"]')
    await expect(card.locator(".reason")).to_have_text("Asked for a person · Billing")
    site.events.publish(CARDS_TOPIC, Taken(handoff.id, site.people["bob"].id))
    notice = page.locator("#notice")
    # The same news path says "The call ended." when the agent's call ends normally.
    await expect(notice).to_have_text("Bob took a call.")
    assert await notice.evaluate("node => getComputedStyle(node).color") != URGENT_RED
    await page.select_option("#presence", "offline")
    await page.select_option("#presence", "away")
    await expect(notice).to_have_text("Go on duty before choosing a presence.")
    assert await notice.evaluate("node => getComputedStyle(node).color") == URGENT_RED


async def test_the_admin_page_gives_phone_examples_of_the_sites_country(
    page: Page, site: Served,
) -> None:
    await sign_in(page, site.origin, "ada", path="/admin")
    form = page.locator("#new-trunk")
    await expect(form.locator("input[name=caller_id]")).to_have_attribute(
        "placeholder", "caller ID, e.g. +442079460123")
    await expect(form.locator("input[name=patterns]")).to_have_attribute(
        "placeholder", "_0[1-3]XXXXXXXXX _+44[1-3]XXXXXXXXX")
