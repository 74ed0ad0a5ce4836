"""The agent's open line in a real Chromium against a real Asterisk.

Going on duty, the desk asks for its line: the PBX calls the browser once and the tab
answers by itself; the leg waits in the agent's own holding bridge. Accept moves that
leg into the caller's bridge (no new INVITE reaches the tab); when the agent's part of
the call is over it goes back to the holding bridge. As in test_softphone, the caller
hears 450 Hz from nobody, 1050 Hz from the AI and 1850 Hz from the agent's microphone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, expect

from handoff.agents import Presence
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.live.lines import Line, LineState
from handoff.phone_watch import PhoneWatch
from handoff.store.models import Handoff
from pbx import runtime
from pbx.asterisk_config import InstanceSpec
from tests.e2e.test_softphone import (
    _closed,
    _customer_heard_agent,
    _latest_outbound,
    _positive,
    inbound_energy,
)
from tests.integration.asterisk_helpers import ari, assert_quiet
from tests.tools_fixtures import finished_call
from tests.waiting import until
from web.bench.softphone_rig import (
    Desk,
    Telephony,
    agent_browser,
    build_softphone_bundle,
    chromium_with_agent_voice,
    desk,
    on_duty_with_phone,
    webrtc_pbx,
)
from web.bench.world import FALLBACK_NUMBER

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

WEBRTC_RTP_TIMEOUT_S = InstanceSpec.webrtc_rtp_timeout


@pytest.fixture(scope="module")
async def telephony(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Telephony]:
    build_softphone_bundle()
    async with webrtc_pbx(runtime.locate(), tmp_path_factory.mktemp("line-state")) as started:
        yield started


@pytest.fixture(scope="module")
async def voiced_chromium(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory
                          ) -> AsyncIterator[Browser]:
    async with chromium_with_agent_voice(chromium_path,
                                         tmp_path_factory.mktemp("voice")) as browser:
        yield browser


@pytest.fixture
async def product(telephony: Telephony, tmp_path: Path) -> AsyncIterator[Desk]:
    async with desk(telephony, tmp_path, open_line=True) as running:
        yield running
    await assert_quiet(telephony.pbx)
    await assert_quiet(telephony.carrier)


@pytest.fixture
async def agent_context(voiced_chromium: Browser) -> AsyncIterator[BrowserContext]:
    async with agent_browser(voiced_chromium, viewport={"width": 1100, "height": 800}) as context:
        yield context


async def with_open_line(page: Page, product: Desk, login: str) -> Line:
    """On duty; the desk says its line is open and the PBX has it parked."""
    await on_duty_with_phone(page, product.origin, login)
    await expect(page.locator("#line-status")).to_have_attribute("data-line", "open")
    return await until(lambda: _idle_line(product, login))


async def a_card(page: Page, product: Desk) -> tuple[str, str, int]:
    """A caller with the AI asks for a person; the card shows: (caller, call, handoff)."""
    caller, call_id = await product.place_call()
    await product.heard(caller, "ai", 0.0)
    handoff_id = await product.control.request_handoff(
        call_id, reason="caller_request", summary="Wants a person")
    await expect(page.locator(f'li.card[data-handoff-id="{handoff_id}"]')).to_be_visible()
    return caller, call_id, handoff_id


async def accept(page: Page, product: Desk, caller: str, handoff_id: int) -> None:
    """Accept; the caller hears the agent and the agent's panel shows the call (its
    buttons act on the call the panel has read)."""
    clicked = time.monotonic()
    await page.locator(f'li.card[data-handoff-id="{handoff_id}"]').get_by_role(
        "button", name="Accept").click()
    await product.heard(caller, "agent", clicked, timeout=15)
    handoff = await until(lambda: _connected(product, handoff_id))
    await expect(page.locator("#call")).to_have_attribute("data-call-id", handoff.call_id)


async def invites(page: Page) -> int:
    return int(await page.evaluate("window.switchboardPhone.invites"))


async def in_bridge(product: Desk, telephony: Telephony, bridge: str, leg: str) -> bool:
    status, body = await ari(telephony.pbx, "GET", f"/bridges/{bridge}")
    return status == 200 and leg in body["channels"]


async def test_on_duty_opens_the_line_and_accept_moves_it_into_the_call_without_an_invite(
    agent_context: BrowserContext, product: Desk, telephony: Telephony,
) -> None:
    page = await agent_context.new_page()
    line = await with_open_line(page, product, "alice")
    # The one INVITE of the shift: the line itself, parked in Alice's holding bridge.
    assert await invites(page) == 1
    assert await in_bridge(product, telephony, line.bridge, line.leg)
    caller, call_id, handoff_id = await a_card(page, product)
    # Parked, her microphone reaches nobody: the caller hears only the AI.
    waited = time.monotonic()
    await product.heard(caller, "ai", waited)
    assert await product.count_heard(caller, "agent", 0.0, time.monotonic()) == 0

    await accept(page, product, caller, handoff_id)
    # Accept was the line moving into the call bridge: no new call reached the tab.
    assert await invites(page) == 1
    live = product.control.calls[call_id]
    assert live.agent == line.leg
    assert await in_bridge(product, telephony, live.bridge, line.leg)
    await until(lambda: _positive(inbound_energy(page)))  # Alice hears the caller
    await expect(page.locator("#my-state")).to_have_text("On a call")

    await page.click("#call-end")
    await expect(page.locator("#call")).to_be_hidden()
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AGENT
    # The call is over, the line is not: back in the holding bridge, the same leg.
    assert await until(lambda: _idle_line(product, "alice")) == line
    assert await in_bridge(product, telephony, line.bridge, line.leg)
    await expect(page.locator("#line-status")).to_have_attribute("data-line", "open")

    # Off duty hangs the line up, and the tab does not ask for another.
    await page.uncheck("#duty")
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "no")
    await expect(page.locator("#line-status")).to_be_hidden()
    assert await until(lambda: product.control.lines.of(line.agent_id) is None)
    assert await invites(page) == 1


async def test_return_to_ai_parks_the_line_and_the_next_accept_uses_it_again(
    agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    line = await with_open_line(page, product, "alice")
    caller, call_id, handoff_id = await a_card(page, product)
    await accept(page, product, caller, handoff_id)

    clicked = time.monotonic()
    await page.click("#call-return")
    await product.heard(caller, "ai", clicked, timeout=10)
    await expect(page.locator("#call")).to_be_hidden()
    assert await until(lambda: _idle_line(product, "alice")) == line
    async with product.store.transaction() as tx:
        assert (await tx.calls.get(call_id)).state is CallState.WITH_AI
    # Wrap-up over, the next card is taken on the same line: still one INVITE in all.
    await page.select_option("#presence", "available")
    handoff_id = await product.control.request_handoff(
        call_id, reason="caller_request", summary="Once more")
    await accept(page, product, caller, handoff_id)
    assert product.control.calls[call_id].agent == line.leg
    assert await invites(page) == 1
    await page.click("#call-end")
    await until(lambda: _closed(product, call_id))


async def test_a_transfer_goes_to_the_colleague_on_their_open_line(
    agent_context: BrowserContext, voiced_chromium: Browser, product: Desk,
) -> None:
    alice_page = await agent_context.new_page()
    alice_line = await with_open_line(alice_page, product, "alice")
    async with agent_browser(voiced_chromium) as bob_context:
        bob_page = await bob_context.new_page()
        bob_line = await with_open_line(bob_page, product, "bob")
        caller, call_id, handoff_id = await a_card(alice_page, product)
        await accept(alice_page, product, caller, handoff_id)

        await expect(alice_page.locator("#transfer-to")).to_contain_text("Bob")
        await alice_page.fill("#transfer-note", "Knows the new address already")
        await alice_page.click("#transfer-form button")
        card = bob_page.locator("li.card")
        await expect(card).to_contain_text("Knows the new address already")
        await card.get_by_role("button", name="Accept").click()
        await expect(bob_page.locator("#call")).to_be_visible()
        await expect(alice_page.locator("#call")).to_be_hidden()
        await product.heard(caller, "agent", time.monotonic(), timeout=5)
        # Bob's line took the call; Alice's went back to her holding bridge.
        assert product.control.calls[call_id].agent == bob_line.leg
        assert await until(lambda: _idle_line(product, "alice")) == alice_line
        assert (await invites(alice_page), await invites(bob_page)) == (1, 1)
        async with product.store.transaction() as tx:
            attempts = list(await tx.handoffs.for_call(call_id))
        assert [(h.state, h.accepted_by) for h in attempts] == [
            (HandoffState.COMPLETED, product.people["alice"].id),
            (HandoffState.CONNECTED, product.people["bob"].id)]

        await bob_page.click("#call-end")
        call = await until(lambda: _closed(product, call_id))
        assert call.outcome is CallOutcome.COMPLETED_BY_AGENT
        assert await until(lambda: _idle_line(product, "bob")) == bob_line


async def test_a_supervisor_whispers_on_their_own_line_until_the_agents_line_is_parked(
    agent_context: BrowserContext, voiced_chromium: Browser, product: Desk,
    telephony: Telephony,
) -> None:
    alice_page = await agent_context.new_page()
    alice_line = await with_open_line(alice_page, product, "alice")
    caller, call_id, handoff_id = await a_card(alice_page, product)
    await accept(alice_page, product, caller, handoff_id)
    async with agent_browser(voiced_chromium) as sam_context:
        # Sam supervises from a desk on duty: his open line joins, nothing rings.
        sam_desk = await sam_context.new_page()
        sam_line = await with_open_line(sam_desk, product, "sam")
        board = await sam_context.new_page()
        await board.goto(f"{product.origin}/supervisor")
        row = board.locator(f'#live-calls tr[data-call="{call_id}"]')
        await row.get_by_role("button", name="Whisper").click()
        await expect(sam_desk.locator("#call")).to_be_visible()
        await expect(sam_desk.locator("#call-role")).to_have_text("Supervising (whisper)")
        await until(lambda: _positive(inbound_energy(sam_desk)))  # Sam hears the call
        assert await invites(sam_desk) == 1
        taken = product.control.lines.of(sam_line.agent_id)
        assert taken is not None and taken.state is LineState.ON_CALL

        # Alice hands the caller back to the AI: her line is parked, so the whisper to
        # her is over; Sam's line goes back to his holding bridge too.
        await alice_page.click("#call-return")
        await product.heard(caller, "ai", time.monotonic(), timeout=10)
        await expect(sam_desk.locator("#call")).to_be_hidden()
        assert await until(lambda: _idle_line(product, "sam")) == sam_line
        assert await until(lambda: _idle_line(product, "alice")) == alice_line
        assert await in_bridge(product, telephony, sam_line.bridge, sam_line.leg)
    await product.control.end_call(call_id)
    await until(lambda: _closed(product, call_id))


async def test_a_call_back_takes_the_open_line_and_gives_it_back_after_it(
    agent_context: BrowserContext, product: Desk, telephony: Telephony,
) -> None:
    alice = product.people["alice"]
    desk_tab = await agent_context.new_page()
    line = await with_open_line(desk_tab, product, "alice")
    await finished_call(product.store, number=FALLBACK_NUMBER, agent_id=alice.id)
    contact_tab = await agent_context.new_page()
    await contact_tab.goto(f"{product.origin}/contacts/{FALLBACK_NUMBER}")

    # A call-back takes her idle line: nothing rings, the customer is dialled at once.
    clicked = time.monotonic()
    await contact_tab.click("#call-back")
    await expect(desk_tab.locator("#call")).to_be_visible()
    await expect(desk_tab.locator("#call-caller")).to_have_text(FALLBACK_NUMBER)
    await until(lambda: _customer_heard_agent(product, clicked))
    assert await invites(desk_tab) == 1
    taken = product.control.lines.of(alice.id)
    assert taken is not None and taken.state is LineState.ON_CALL
    call = await until(lambda: _latest_outbound(product))
    await desk_tab.click("#call-end")
    await expect(desk_tab.locator("#call")).to_be_hidden()
    await until(lambda: _closed(product, call.id))
    # The same line is back in her holding bridge, open on the desk.
    assert await until(lambda: _idle_line(product, "alice")) == line
    assert await in_bridge(product, telephony, line.bridge, line.leg)
    await expect(desk_tab.locator("#line-status")).to_have_attribute("data-line", "open")
    assert await invites(desk_tab) == 1


async def test_a_muted_line_outlives_the_pbxs_media_timeout_and_is_unmuted_for_the_call(
    agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    line = await with_open_line(page, product, "alice")
    # Muted, the browser still sends a (silent) G.711 packet every 20 ms: the PBX's RTP
    # timeout (5 s for browsers, pjsip.conf) must not take the parked line for a dead tab.
    await page.evaluate("window.switchboardPhone.setMuted(true)")
    await asyncio.sleep(2 * WEBRTC_RTP_TIMEOUT_S)  # a window: nothing must happen in it
    assert _idle_line(product, "alice") == line
    await expect(page.locator("#line-status")).to_have_attribute("data-line", "open")
    # The next caller hears her: a call on the line starts unmuted.
    caller, call_id, handoff_id = await a_card(page, product)
    await accept(page, product, caller, handoff_id)
    await page.click("#call-end")
    await until(lambda: _closed(product, call_id))


async def test_a_reloaded_desk_opens_its_line_again_and_takes_the_next_call_on_it(
    agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    before = await with_open_line(page, product, "alice")
    await page.reload()
    # The old tab hung its line up on the way out; the new one asks for its own.
    await expect(page.locator("#line-status")).to_have_attribute("data-line", "open")
    after = await until(lambda: _idle_line(product, "alice"))
    assert after.leg != before.leg
    caller, call_id, handoff_id = await a_card(page, product)
    await accept(page, product, caller, handoff_id)
    assert product.control.calls[call_id].agent == after.leg
    await page.click("#call-end")
    await until(lambda: _closed(product, call_id))
    # "Offline" in the presence menu is off duty too: the line is hung up.
    await page.select_option("#presence", "offline")
    await expect(page.locator("#line-status")).to_be_hidden()
    assert await until(lambda: product.control.lines.of(after.agent_id) is None)


async def test_a_dropped_sip_websocket_keeps_the_line_and_a_dropped_line_reopens(
    agent_context: BrowserContext, product: Desk, telephony: Telephony,
) -> None:
    page = await agent_context.new_page()
    line = await with_open_line(page, product, "alice")
    # A network blip: JsSIP's socket drops and comes back; the line's media never
    # used it, so the same line stays up (the tab tells the PBX where it is now).
    await page.evaluate("window.switchboardPhone.ua.transport.socket._ws.close()")
    await expect(page.locator("#phone-status")).not_to_have_attribute("data-state",
                                                                      "registered")
    await expect(page.locator("#phone-status")).to_have_attribute("data-state", "registered")
    assert _idle_line(product, "alice") == line
    caller, call_id, handoff_id = await a_card(page, product)
    await accept(page, product, caller, handoff_id)
    assert product.control.calls[call_id].agent == line.leg
    await page.click("#call-end")
    await until(lambda: _closed(product, call_id))

    # The line itself lost (as the PBX's media timeout ends it): the tab asks again.
    await until(lambda: _idle_line(product, "alice"))
    await ari(telephony.pbx, "DELETE", f"/channels/{line.leg}")
    await expect(page.locator("#line-status")).to_have_attribute("data-line", "open")
    again = await until(lambda: _idle_line(product, "alice"))
    assert again.leg != line.leg


async def test_while_the_line_is_down_no_card_shows_and_the_agent_is_set_away(
    agent_context: BrowserContext, product: Desk, telephony: Telephony,
) -> None:
    watch = PhoneWatch(product.store, product.control.hub, product.control.phone_registered,
                       grace_checks=2)
    page = await agent_context.new_page()
    line = await with_open_line(page, product, "alice")
    assert await watch.check_once() == []

    async def refused(route: Route) -> None:
        # As the server answers while her last lines carried no audio (an outage).
        await route.fulfill(status=503, headers={"Retry-After": "3"}, json={
            "error": "line_backoff", "reason": "test", "retry_after_s": 3})

    # The line drops and the PBX cannot give her another for now: the tab asks again
    # when the server says, and the desk says when that is.
    await page.route("**/api/line", refused)
    await ari(telephony.pbx, "DELETE", f"/channels/{line.leg}")
    status = page.locator("#line-status")
    await expect(status).to_have_attribute("data-line", "down")
    await expect(status).to_have_attribute("data-retry-s", "3")
    await expect(status).to_have_text("Line: down, next try in 3 s")
    _, call_id = await product.place_call()
    handoff_id = await product.control.request_handoff(
        call_id, reason="caller_request", summary="Nobody should see this yet")
    await expect(page.locator("#busy-note")).to_contain_text("Your line is opening")
    await expect(page.locator(f'li.card[data-handoff-id="{handoff_id}"]')).to_be_hidden()
    # After the phone watch's grace she is set away, as with an unregistered phone.
    alice = product.people["alice"].id
    assert await until(watch.check_once, within=15, step=0.2) == [alice]
    async with product.store.transaction() as tx:
        assert (await tx.agents.get(alice)).presence is Presence.AWAY
    await product.control.end_call(call_id)
    await until(lambda: _closed(product, call_id))

    # The PBX is back: the line reopens by itself; she chooses to take calls again.
    await page.unroute("**/api/line", refused)
    await expect(page.locator("#line-status")).to_have_attribute("data-line", "open",
                                                                  timeout=30_000)
    await page.select_option("#presence", "available")
    caller, call_id, handoff_id = await a_card(page, product)
    await accept(page, product, caller, handoff_id)
    await page.click("#call-end")
    await until(lambda: _closed(product, call_id))


async def test_with_open_lines_turned_off_accept_rings_the_browser(
    agent_context: BrowserContext, telephony: Telephony, tmp_path: Path,
) -> None:
    async with desk(telephony, tmp_path, open_line=False) as product:
        page = await agent_context.new_page()
        await on_duty_with_phone(page, product.origin, "alice")
        await expect(page.locator("#line-status")).to_be_hidden()
        assert product.control.lines.of(product.people["alice"].id) is None
        assert await invites(page) == 0
        caller, call_id, handoff_id = await a_card(page, product)
        await accept(page, product, caller, handoff_id)
        assert await invites(page) == 1  # the Accept's own call
        await page.click("#call-end")
        await until(lambda: _closed(product, call_id))
    await assert_quiet(telephony.pbx)


async def _connected(product: Desk, handoff_id: int) -> Handoff | None:
    async with product.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    return handoff if handoff.state is HandoffState.CONNECTED else None


def _idle_line(product: Desk, login: str) -> Line | None:
    line = product.control.lines.of(product.people[login].id)
    return line if line is not None and line.state is LineState.IDLE else None
