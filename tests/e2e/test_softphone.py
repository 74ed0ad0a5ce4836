"""The softphone in a real Chromium against a real Asterisk: an agent takes a live call.

The caller is a channel the carrier places (it sends 450 Hz and records what it hears),
the AI an AudioSocket engine sending 1050 Hz, and the agent's microphone a WAV of
1850 Hz fed to Chromium's fake capture device. Which tone the caller hears says who
they are talking to, frame by frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page, Route, expect
from playwright.async_api import Error as PlaywrightError

from handoff.agents import Presence
from handoff.calls import CallDirection, CallOutcome, CallState, Speaker
from handoff.events import CALLS_TOPIC, CallChanged
from handoff.handoffs import FailureReason, HandoffState
from handoff.phone_watch import PhoneWatch
from handoff.store.models import Call, Handoff
from pbx import runtime
from pbx.asterisk_config import InstanceSpec
from tests.integration.asterisk_helpers import assert_quiet
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
    sign_in,
    sign_in_with_phone,
    webrtc_pbx,
)
from web.bench.world import FALLBACK_NUMBER, World

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
async def telephony(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Telephony]:
    build_softphone_bundle()
    installation = runtime.locate()
    async with webrtc_pbx(installation, tmp_path_factory.mktemp("softphone-state")) as started:
        yield started


@pytest.fixture(scope="module")
async def voiced_chromium(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory
                          ) -> AsyncIterator[Browser]:
    async with chromium_with_agent_voice(chromium_path,
                                         tmp_path_factory.mktemp("voice")) as browser:
        yield browser


@pytest.fixture
async def product(telephony: Telephony, tmp_path: Path) -> AsyncIterator[Desk]:
    async with desk(telephony, tmp_path) as running:
        yield running
    await assert_quiet(telephony.pbx)
    await assert_quiet(telephony.carrier)


@pytest.fixture
async def agent_context(voiced_chromium: Browser) -> AsyncIterator[BrowserContext]:
    async with agent_browser(voiced_chromium, viewport={"width": 1100, "height": 800}) as context:
        yield context


async def on_duty_with_a_card(page: Page, product: Desk) -> tuple[str, str, int]:
    """Alice's desk is on duty; a caller asks the AI for a person; her card shows."""
    await on_duty_with_phone(page, product.origin, "alice")
    caller, call_id = await product.place_call()
    await product.heard(caller, "ai", 0.0)
    async with product.store.transaction() as tx:
        # What an AI engine posts over the control API while it talks to the caller.
        await tx.transcripts.append(call_id, Speaker.AI, "Hello, how can I help you?")
        await tx.transcripts.append(call_id, Speaker.CALLER, "I moved; my parcel must follow.")
    handoff_id = await product.control.request_handoff(
        call_id, reason="caller_request", summary="Wants to change the delivery address")
    card = page.locator(f'li.card[data-handoff-id="{handoff_id}"]')
    await expect(card).to_contain_text("Wants to change the delivery address")
    return caller, call_id, handoff_id


async def accept_and_talk(page: Page, product: Desk, caller: str, handoff_id: int) -> float:
    """Click Accept; returns how long until the caller heard the agent's voice."""
    card = page.locator(f'li.card[data-handoff-id="{handoff_id}"]')
    clicked = time.monotonic()
    await card.get_by_role("button", name="Accept").click()
    heard = await product.heard(caller, "agent", clicked, timeout=15)
    await expect(page.locator("#call")).to_be_visible()
    return heard - clicked


async def talking_to_a_caller(page: Page, product: Desk) -> tuple[str, str, int]:
    """On duty, a card accepted, the caller heard and the handoff connected: (caller,
    call id, handoff id)."""
    caller, call_id, handoff_id = await on_duty_with_a_card(page, product)
    await accept_and_talk(page, product, caller, handoff_id)
    assert await until(lambda: _handoff_in(product, handoff_id, HandoffState.CONNECTED))
    return caller, call_id, handoff_id


async def inbound_energy(page: Page) -> float:
    stats = await page.evaluate("window.switchboardPhone.stats()")
    return float(stats["inbound"]["energy"]) if stats and stats["inbound"] else 0.0


async def test_an_agent_accepts_a_live_call_in_the_browser_talks_mutes_and_ends_it(
    agent_context: BrowserContext, product: Desk, screenshots: Path,
) -> None:
    page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(page, product)
    await page.screenshot(path=str(screenshots / "desk-card.png"))

    accept_to_audio = await accept_and_talk(page, product, caller, handoff_id)
    log.warning("accept click -> caller hears the agent: %.0f ms", accept_to_audio * 1000)
    print(f"\naccept click -> caller hears the agent: {accept_to_audio * 1000:.0f} ms")
    # The caller hears the agent; the browser hears the caller (audio energy arrives).
    await until(lambda: _positive(inbound_energy(page)))
    # Connected once the AI has left, a moment after the agent's voice reached Asterisk.
    await until(lambda: _handoff_in(product, handoff_id, HandoffState.CONNECTED))
    await expect(page.locator("#call-caller")).to_contain_text("Test Caller")
    await expect(page.locator("#call-transcript")).to_contain_text("my parcel must follow")
    await expect(page.locator("#call-timer")).not_to_have_text("0:00", timeout=5000)
    # The top bar says the call, whatever the presence menu (what the agent returns to).
    await expect(page.locator("#my-state")).to_have_text("On a call")

    # A line added to the transcript (as the AI control API does) is pushed to the
    # panel at once, not at its next slow poll (10 s).
    async with product.store.transaction() as tx:
        await tx.transcripts.append(call_id, Speaker.SYSTEM, "Caller verified by SMS code")
    product.control.hub.publish(CALLS_TOPIC, CallChanged(call_id))
    await expect(page.locator("#call-transcript")).to_contain_text(
        "verified by SMS code", timeout=3000)

    await page.fill("#note-text", "Delivery moves to 12 rue des Lilas")
    await page.click("#note-form button")
    await expect(page.locator("#call-notes")).to_contain_text("12 rue des Lilas")
    await page.screenshot(path=str(screenshots / "desk-call-panel.png"))

    await page.click("#call-mute")
    muted_at = time.monotonic()
    await asyncio.sleep(1.5)  # what the caller hears meanwhile is checked: a window
    assert await product.count_heard(caller, "agent", muted_at + 0.5, muted_at + 1.5) == 0
    await page.click("#call-mute")
    await product.heard(caller, "agent", time.monotonic(), timeout=5)

    # The Desk holds the phone: History opens in a new tab. Leaving the Desk mid-call
    # anyway (a reload, a typed address) asks first; staying keeps the call.
    await expect(page.locator('header nav a[href="/history"]')).to_have_attribute(
        "target", "_blank")
    asked: list[str] = []

    async def stay(dialog: Dialog) -> None:
        asked.append(dialog.type)
        await dialog.dismiss()

    page.once("dialog", stay)
    await page.close(run_before_unload=True)
    await until(lambda: asked == ["beforeunload"])
    assert not page.is_closed()
    await product.heard(caller, "agent", time.monotonic(), timeout=5)

    await page.click("#call-end")
    await expect(page.locator("#call")).to_be_hidden()
    # A normal end is news, not an error: not in the red problems are shown in.
    notice = page.locator("#notice")
    await expect(notice).to_have_text("The call ended.")
    assert await notice.evaluate("node => getComputedStyle(node).color") != "rgb(198, 40, 40)"
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AGENT
    async with product.store.transaction() as tx:
        notes = await tx.notes.for_call(call_id)
    assert [n.text for n in notes] == ["Delivery moves to 12 rue des Lilas"]


async def test_return_to_ai_gives_the_caller_back_to_the_ai_and_frees_the_agent(
    agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(page, product)
    await accept_and_talk(page, product, caller, handoff_id)

    clicked = time.monotonic()
    await page.click("#call-return")
    await product.heard(caller, "ai", clicked, timeout=10)
    await expect(page.locator("#call")).to_be_hidden()
    assert await until(lambda: _handoff_in(product, handoff_id, HandoffState.RETURNED_TO_AI))
    async with product.store.transaction() as tx:
        assert (await tx.calls.get(call_id)).state is CallState.WITH_AI
    # The caller no longer hears the agent once the AI is back: a second listened to,
    # after half a second for the agent's hang-up and the audio already on its way.
    await asyncio.sleep(0.5)
    settled = time.monotonic()
    await asyncio.sleep(1.0)
    assert await product.count_heard(caller, "agent", settled, settled + 1.0) == 0

    await product.world.hang_up(caller)
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AI  # the AI had the caller at the end


# R9's bound: the PBX's media timeout for browser phones (webrtc_rtp_timeout, counted
# from the agent's last packet), plus a second for the AI leg to rejoin and be heard.
AGENT_GONE_BOUND_S = InstanceSpec.webrtc_rtp_timeout + 1.0


@pytest.mark.parametrize("how", ["tab_closed_as_it_connected", "tab_closed_mid_call",
                                 "network_gone_mid_call", "tab_crashed_mid_call"])
async def test_an_agent_gone_mid_call_gives_the_caller_back_to_the_ai_and_reoffers(
    how: str, agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(page, product)
    await accept_and_talk(page, product, caller, handoff_id)
    if how != "tab_closed_as_it_connected":
        # Mid-call: the AI has left. (As it connected, the AI is still leaving.)
        assert await until(lambda: _handoff_in(product, handoff_id, HandoffState.CONNECTED))

    gone = time.monotonic()
    if how == "network_gone_mid_call":
        # No BYE and no more media, as when the agent's network dies: the PBX's media
        # timeout for browser phones ends the leg.
        await page.evaluate("window.switchboardPhone.session.connection.close()")
    elif how == "tab_crashed_mid_call":
        # The tab's process dies (killed, out of memory): no script runs, so no BYE;
        # its socket closes under it and its media stop.
        cdp = await agent_context.new_cdp_session(page)
        with contextlib.suppress(PlaywrightError, TimeoutError):
            await asyncio.wait_for(cdp.send("Page.crash"), 5)
    else:
        await page.close()  # the softphone hangs up on its way out
    back = await product.heard(caller, "ai", gone, timeout=20)
    print(f"\n{how} -> caller hears the AI again: {(back - gone) * 1000:.0f} ms")
    log.warning("%s -> caller hears the AI again: %.0f ms", how, (back - gone) * 1000)
    assert back - gone <= AGENT_GONE_BOUND_S, f"{back - gone:.1f} s"

    # The AI rejoins before the ledger is written (the caller must not wait for it).
    attempts = await until(lambda: _attempts(product, call_id, 2))
    first = attempts[0]
    assert first.state is HandoffState.FAILED
    assert first.failure_reason is FailureReason.AGENT_VANISHED
    again = attempts[-1]
    assert (again.state, again.attempt) == (HandoffState.OFFERED, 2)
    assert again.priority > first.priority

    await product.world.hang_up(caller)
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.ABANDONED


async def test_an_agent_who_hangs_up_the_softphone_ends_the_call_as_end_call_does(
    agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    _, call_id, handoff_id = await talking_to_a_caller(page, product)

    # The phone's own hang-up: a BYE with no Reason (a closing tab's says the phone is
    # going away, and the caller goes back to the AI instead).
    await page.evaluate("window.switchboardPhone.session.terminate()")
    await expect(page.locator("#call")).to_be_hidden()
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AGENT
    async with product.store.transaction() as tx:
        attempts = list(await tx.handoffs.for_call(call_id))
    assert [(h.id, h.state) for h in attempts] == [(handoff_id, HandoffState.COMPLETED)]


async def test_a_call_outlives_a_dropped_sip_websocket_and_still_ends_cleanly(
    agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    caller, call_id, _ = await talking_to_a_caller(page, product)

    # A network blip: the softphone's SIP WebSocket drops (JsSIP's own socket, reached
    # through its internals) and JsSIP connects and registers again by itself.
    await page.evaluate("window.switchboardPhone.ua.transport.socket._ws.close()")
    await expect(page.locator("#phone-status")).not_to_have_attribute("data-state",
                                                                      "registered")
    await expect(page.locator("#phone-status")).to_have_attribute("data-state", "registered")
    # The media never used that socket: the caller keeps hearing the agent.
    after = time.monotonic()
    await asyncio.sleep(2.0)  # what the caller hears meanwhile is checked: a window
    assert await product.count_heard(caller, "agent", after, after + 2.0) > 50  # of 100
    # The PBX's BYE reaches the phone over its new socket: the panel closes at End.
    await page.click("#call-end")
    await expect(page.locator("#call")).to_be_hidden()
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AGENT


async def test_end_waits_until_the_panel_knows_its_call(
    agent_context: BrowserContext, product: Desk,
) -> None:
    """The panel opens as the phone connects and asks the server which call it is a
    moment later: an End clicked in between did nothing (a fresh-clone run's call that
    never ended). Held back here, End stays disabled until the answer, then ends it."""
    page = await agent_context.new_page()
    _, call_id, handoff_id = await on_duty_with_a_card(page, product)
    answer = asyncio.Event()

    async def held_back(route: Route) -> None:
        await answer.wait()
        await route.continue_()

    await page.route("**/api/calls/current", held_back)
    await page.locator(f'li.card[data-handoff-id="{handoff_id}"]').get_by_role(
        "button", name="Accept").click()
    await expect(page.locator("#call")).to_be_visible()
    await expect(page.locator("#call-end")).to_be_disabled()
    answer.set()
    await expect(page.locator("#call-end")).to_be_enabled()
    await page.click("#call-end")
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AGENT


async def test_an_agent_transfers_the_call_to_a_colleague_with_a_note(
    agent_context: BrowserContext, voiced_chromium: Browser, product: Desk,
) -> None:
    alice_page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(alice_page, product)
    async with agent_browser(voiced_chromium) as bob_context:
        bob_page = await bob_context.new_page()
        await accept_and_talk(alice_page, product, caller, handoff_id)
        await expect(alice_page.locator("#transfer-status")).to_have_text(
            "No colleague is available to take a transfer.")

        # Bob comes on duty while Alice talks: her transfer list shows him at once
        # (pushed; the panel's safety poll is 10 s, longer than this wait).
        await on_duty_with_phone(bob_page, product.origin, "bob")
        await expect(alice_page.locator("#transfer-to")).to_contain_text("Bob", timeout=5_000)
        await expect(alice_page.locator("#transfer-status")).to_have_text("")
        await alice_page.fill("#transfer-note", "Knows the new address already")
        await alice_page.click("#transfer-form button")
        card = bob_page.locator("li.card")
        await expect(card).to_contain_text("Knows the new address already")
        await card.get_by_role("button", name="Accept").click()
        await expect(bob_page.locator("#call")).to_be_visible()
        await expect(alice_page.locator("#call")).to_be_hidden()
        switched = time.monotonic()
        await product.heard(caller, "agent", switched, timeout=5)

        async with product.store.transaction() as tx:
            attempts = list(await tx.handoffs.for_call(call_id))
        assert [(h.state, h.accepted_by) for h in attempts] == [
            (HandoffState.COMPLETED, product.people["alice"].id),
            (HandoffState.CONNECTED, product.people["bob"].id)]
        assert attempts[1].note == "Knows the new address already"

        await bob_page.click("#call-end")
        call = await until(lambda: _closed(product, call_id))
        assert call.outcome is CallOutcome.COMPLETED_BY_AGENT


async def test_the_card_goes_when_the_caller_hangs_up_while_it_shows(
    agent_context: BrowserContext, product: Desk,
) -> None:
    page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(page, product)
    card = page.locator(f'li.card[data-handoff-id="{handoff_id}"]')

    hung_up = time.monotonic()
    await product.world.hang_up(caller)
    await expect(card).to_have_count(0)
    log.warning("caller hung up -> card gone: %.0f ms", (time.monotonic() - hung_up) * 1000)
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.ABANDONED
    assert await _handoff_in(product, handoff_id, HandoffState.ABANDONED)


async def test_two_agents_accept_at_once_one_gets_the_call_the_other_is_told(
    agent_context: BrowserContext, voiced_chromium: Browser, product: Desk,
) -> None:
    alice_page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(alice_page, product)
    async with agent_browser(voiced_chromium) as bob_context:
        bob_page = await bob_context.new_page()
        await on_duty_with_phone(bob_page, product.origin, "bob")
        pages = {"alice": alice_page, "bob": bob_page}
        buttons = [page.locator(f'li.card[data-handoff-id="{handoff_id}"]')
                   .get_by_role("button", name="Accept") for page in pages.values()]
        for button in buttons:
            await expect(button).to_be_enabled()
        # Both clicks at the same moment, as two people would: dispatched in each page
        # without Playwright's checks in between (the winner's card leaves the loser's
        # page within milliseconds, and a second checked click would find it gone).
        handles = [await button.element_handle() for button in buttons]
        await asyncio.gather(*(handle.evaluate("button => button.click()")
                               for handle in handles))

        handoff = await until(lambda: _accepted(product, handoff_id))
        winner = next(login for login, who in product.people.items()
                      if who.id == handoff.accepted_by)
        loser = "bob" if winner == "alice" else "alice"
        await expect(pages[winner].locator("#call")).to_be_visible()
        await product.heard(caller, "agent", time.monotonic(), timeout=10)
        # The loser is told who took it (by the Accept's answer or by the card leaving).
        await expect(pages[loser].locator("body")).to_contain_text(
            re.compile(rf"{winner.capitalize()} (already )?took"))
        await expect(pages[loser].locator("#call")).to_be_hidden()

        await pages[winner].click("#call-end")
        call = await until(lambda: _closed(product, call_id))
        assert call.outcome is CallOutcome.COMPLETED_BY_AGENT


async def test_a_second_tab_says_the_phone_is_elsewhere_and_can_take_it_over(
    agent_context: BrowserContext, product: Desk,
) -> None:
    first = await agent_context.new_page()
    await on_duty_with_phone(first, product.origin, "alice")
    second = await agent_context.new_page()
    await second.goto(f"{product.origin}/")
    await expect(second.locator("#phone-status")).to_have_attribute("data-state", "elsewhere")
    take = second.get_by_role("button", name="Use the phone in this tab")
    await expect(take).to_be_visible()

    # Going on duty in the tab without the phone says where the phone is.
    await second.uncheck("#duty")
    await expect(second.locator("body")).to_have_attribute("data-on-duty", "no")
    await second.click("#duty")  # the page unticks it again: not check()
    await expect(second.locator("#notice")).to_contain_text("open in another tab")
    await expect(second.locator("#duty")).not_to_be_checked()

    await take.click()
    await expect(second.locator("#phone-status")).to_have_attribute(
        "data-state", "registered", timeout=15_000)
    await expect(first.locator("#phone-status")).to_have_attribute("data-state", "elsewhere")
    await second.check("#duty")
    await expect(second.locator("body")).to_have_attribute("data-on-duty", "yes")

    # The card rings the tab that holds the phone.
    caller, call_id = await product.place_call()
    await product.heard(caller, "ai", 0.0)
    handoff_id = await product.control.request_handoff(call_id, reason="caller_request",
                                                       summary="Second tab")
    await second.locator(f'li.card[data-handoff-id="{handoff_id}"]').get_by_role(
        "button", name="Accept").click()
    await expect(second.locator("#call")).to_be_visible()
    await product.heard(caller, "agent", time.monotonic(), timeout=10)
    await second.click("#call-end")
    await until(lambda: _closed(product, call_id))


async def test_going_on_duty_with_the_microphone_blocked_says_so_and_stays_off(
    voiced_chromium: Browser, product: Desk,
) -> None:
    async with agent_browser(voiced_chromium) as context:
        # What the browser answers when the user (or a policy) blocked the microphone.
        await context.add_init_script("""
            navigator.mediaDevices.getUserMedia = () =>
              Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
        """)
        page = await context.new_page()
        await sign_in_with_phone(page, product.origin, "alice")
        await duty_refused(page, product, "alice", "blocks the microphone")


async def duty_refused(page: Page, product: Desk, login: str, says: str) -> None:
    """Ticking duty is refused with a message, and the agent stays off duty."""
    await page.click("#duty")  # the page unticks it again: not check()
    await expect(page.locator("#notice")).to_contain_text(says)
    await expect(page.locator("#duty")).not_to_be_checked()
    async with product.store.transaction() as tx:
        assert not (await tx.agents.get(product.people[login].id)).on_duty


async def test_going_on_duty_with_an_unplugged_desk_phone_says_so_and_stays_off(
    voiced_chromium: Browser, product: Desk,
) -> None:
    # Dora's desk phone is known to the PBX but has never registered: the PBX says it
    # cannot ring, so a card she accepted would leave a caller waiting.
    async with agent_browser(voiced_chromium) as context:
        page = await context.new_page()
        await sign_in(page, product.origin, "dora")
        await expect(page.locator("body")).to_have_attribute("data-phone", "none")
        await duty_refused(page, product, "dora", "Your desk phone (sb-dora) is not registered")


async def test_an_agent_who_closes_the_browser_on_duty_is_set_away_and_a_colleague_stays(
    voiced_chromium: Browser, product: Desk,
) -> None:
    # Alice closes her browser without going off duty; Bob's desk stays open. Once her
    # phone has been unregistered for two checks, the PBX's word sets her away.
    watch = PhoneWatch(product.store, product.control.hub, product.control.phone_registered,
                       grace_checks=2)
    async with agent_browser(voiced_chromium) as alice, agent_browser(voiced_chromium) as bob:
        alice_page, bob_page = await alice.new_page(), await bob.new_page()
        await on_duty_with_phone(alice_page, product.origin, "alice")
        await on_duty_with_phone(bob_page, product.origin, "bob")
        assert await watch.check_once() == []
        await alice.close()

        async def alice_away() -> list[int]:
            return await watch.check_once()

        assert await until(alice_away, within=15, step=0.2) == [product.people["alice"].id]
        async with product.store.transaction() as tx:
            presences = {login: (await tx.agents.get(agent.id)).presence
                         for login, agent in product.people.items()}
        assert (presences["alice"], presences["bob"]) == (Presence.AWAY, Presence.AVAILABLE)
        await expect(bob_page.locator("#duty")).to_be_checked()
    # Back at her desk, Alice is told why no calls come, and takes them again by choice.
    async with agent_browser(voiced_chromium) as alice:
        page = await alice.new_page()
        await sign_in_with_phone(page, product.origin, "alice")
        await expect(page.locator("#notice")).to_contain_text("You are away")
        await page.select_option("#presence", "available")
        await expect(page.locator("#notice")).to_have_text("")
        async with product.store.transaction() as tx:
            assert (await tx.agents.get(product.people["alice"].id)).presence is (
                Presence.AVAILABLE)


async def test_a_call_back_from_the_contact_page_is_answered_by_the_desk_tab(
    agent_context: BrowserContext, product: Desk,
) -> None:
    alice = product.people["alice"]
    desk_tab = await agent_context.new_page()
    await on_duty_with_phone(desk_tab, product.origin, "alice")
    await finished_call(product.store, number=FALLBACK_NUMBER, agent_id=alice.id)
    contact_tab = await agent_context.new_page()
    await contact_tab.goto(f"{product.origin}/contacts/{FALLBACK_NUMBER}")

    clicked = time.monotonic()
    await contact_tab.click("#call-back")
    await expect(contact_tab.locator("#contact-status")).to_contain_text("Desk tab")
    # The desk tab answers its own call-back; the panel has no AI and no transfer.
    await expect(desk_tab.locator("#call")).to_be_visible()
    await expect(desk_tab.locator("#call-number")).to_have_text("")
    await expect(desk_tab.locator("#call-caller")).to_have_text(FALLBACK_NUMBER)
    await expect(desk_tab.locator("#call-return")).to_be_hidden()
    await expect(desk_tab.locator("#transfer-form")).to_be_hidden()
    # Both ways: the browser hears the customer, the customer hears the agent.
    await until(lambda: _positive(inbound_energy(desk_tab)))
    await until(lambda: _customer_heard_agent(product, clicked))

    call = await until(lambda: _latest_outbound(product))
    await desk_tab.click("#call-end")
    await expect(desk_tab.locator("#call")).to_be_hidden()
    ended = await until(lambda: _closed(product, call.id))
    assert ended.outcome is CallOutcome.COMPLETED_BY_AGENT


async def test_a_call_back_without_the_desk_open_says_where_the_phone_is(
    agent_context: BrowserContext, product: Desk,
) -> None:
    await finished_call(product.store, number=FALLBACK_NUMBER,
                        agent_id=product.people["alice"].id)
    contact_tab = await agent_context.new_page()
    await sign_in_with_phone(contact_tab, product.origin, "alice")  # then leaves the desk
    await contact_tab.goto(f"{product.origin}/contacts/{FALLBACK_NUMBER}")
    await contact_tab.click("#call-back")
    await expect(contact_tab.locator("#contact-status")).to_contain_text("open the Desk")
    async with product.store.transaction() as tx:
        assert await tx.calls.open_calls() == []  # nothing was dialled


async def test_a_supervisor_listens_from_the_desk_tab_and_leaves_the_call_going_on(
    agent_context: BrowserContext, voiced_chromium: Browser, product: Desk,
) -> None:
    alice_page = await agent_context.new_page()
    caller, call_id, handoff_id = await on_duty_with_a_card(alice_page, product)
    await accept_and_talk(alice_page, product, caller, handoff_id)
    async with agent_browser(voiced_chromium) as sam_context:
        sam_desk = await sam_context.new_page()
        await sign_in_with_phone(sam_desk, product.origin, "sam")
        board = await sam_context.new_page()
        await board.goto(f"{product.origin}/supervisor")
        row = board.locator(f'#live-calls tr[data-call="{call_id}"]')
        await row.get_by_role("button", name="Listen").click()

        # The Desk tab answers the supervision call and says what it is.
        await expect(sam_desk.locator("#call")).to_be_visible()
        await expect(sam_desk.locator("#call-role")).to_have_text("Supervising (listen)")
        await expect(sam_desk.locator("#call-end")).to_have_text("Leave")
        await expect(sam_desk.locator("#call-return")).to_be_hidden()
        await expect(sam_desk.locator("#transfer-form")).to_be_hidden()
        await until(lambda: _positive(inbound_energy(sam_desk)))  # Sam hears the call
        await expect(row).to_contain_text("you: listen")

        await sam_desk.click("#call-end")  # Leave: the call is not Sam's to end
        await expect(sam_desk.locator("#call")).to_be_hidden()
        await expect(row).not_to_contain_text("you: listen")
    after = time.monotonic()
    await product.heard(caller, "agent", after, timeout=5)  # Alice and the caller go on
    async with product.store.transaction() as tx:
        assert (await tx.calls.get(call_id)).state is CallState.WITH_AGENT
        assert "listen" in [e.action for e in await tx.audit.recent()]
    await alice_page.click("#call-end")
    call = await until(lambda: _closed(product, call_id))
    assert call.outcome is CallOutcome.COMPLETED_BY_AGENT


async def _customer_heard_agent(product: Desk, after: float) -> bool:
    assert isinstance(product.world, World)  # the tests' world is in-process
    return any(probe.first("agent", after) is not None for probe in product.world.agent_probes)


async def _latest_outbound(product: Desk) -> Call | None:
    async with product.store.transaction() as tx:
        calls = [c for c in await tx.calls.open_calls() if c.direction is CallDirection.OUTBOUND]
    return calls[-1] if calls else None


async def _accepted(product: Desk, handoff_id: int) -> Handoff | None:
    async with product.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    return handoff if handoff.accepted_by is not None else None


async def _positive(value: Awaitable[float]) -> bool:
    return float(await value) > 0


async def _handoff_in(product: Desk, handoff_id: int, state: HandoffState) -> bool:
    async with product.store.transaction() as tx:
        return (await tx.handoffs.get(handoff_id)).state is state


async def _closed(product: Desk, call_id: str) -> Call | None:
    async with product.store.transaction() as tx:
        call = await tx.calls.get(call_id)
    return call if call.outcome is not None else None


async def _attempts(product: Desk, call_id: str, count: int) -> list[Handoff] | None:
    async with product.store.transaction() as tx:
        attempts = list(await tx.handoffs.for_call(call_id))
    return attempts if len(attempts) >= count else None
