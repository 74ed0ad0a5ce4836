"""The agent desk in a real Chromium: sign in, go on duty, a card arrives over the
WebSocket, Accept reaches the call controller, a card taken elsewhere disappears."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from handoff.agents import Presence
from handoff.calls import CallOutcome
from handoff.events import CARDS_TOPIC, CallEnded, Taken, Withdrawn
from handoff.handoffs import HandoffEvent, handoff_priority
from tests.dashboard_fixtures import PASSWORD, Served, free_port, offer_card
from tests.waiting import until
from web.bench.softphone_rig import sign_in
from web.dashboard import DASHBOARD
from web.dashboard.hub import CloseCode

pytestmark = pytest.mark.e2e


async def test_an_agent_goes_on_duty_sees_a_card_accepts_it_and_a_taken_card_vanishes(
    page: Page, served: Served, screenshots: Path,
) -> None:
    alice, bob = served.people["alice"], served.people["bob"]
    await sign_in(page, served.origin, "alice")

    await page.check("#duty")
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "yes")
    async with served.store.transaction() as tx:
        assert (await tx.agents.get(alice.id)).on_duty

    first = await offer_card(served.store, served.events, caller_name="Jeanne Martin",
                             summary="Wants to dispute invoice 2025-114", priority=5)
    second = await offer_card(served.store, served.events, caller_name="Paul Durand",
                              caller_number="+33987654321", summary="Moving house")
    first_card = page.locator(f'li.card[data-handoff-id="{first.id}"]')
    second_card = page.locator(f'li.card[data-handoff-id="{second.id}"]')
    await expect(first_card).to_contain_text("Jeanne Martin")
    await expect(first_card).to_contain_text("Wants to dispute invoice 2025-114")
    await expect(second_card).to_contain_text("Paul Durand")
    # Most urgent first.
    await expect(page.locator("li.card").first).to_have_attribute(
        "data-handoff-id", str(first.id))
    await page.screenshot(path=str(screenshots / "desk.png"))

    accept_posts: list[str] = []
    page.on("request", lambda r: accept_posts.append(r.url) if "/accept" in r.url else None)
    await first_card.get_by_role("button", name="Accept").click()
    await until(lambda: served.commands.accepted == [(first.id, alice.id)])
    await expect(first_card.locator(".status")).to_contain_text("Connecting")
    # The click went over the page's open socket, not as a POST (no session read on the
    # way to the caller).
    assert accept_posts == []

    served.events.publish(CARDS_TOPIC, Taken(second.id, bob.id))
    await expect(second_card).to_have_count(0)
    await expect(page.locator("#notice")).to_contain_text("Bob took a call")


# How long the desk keeps news (a colleague took a call) and a lost card (desk.js).
NEWS_MS = 6000
LOST_MS = 5000


async def on_duty(page: Page, served: Served, login: str) -> None:
    await sign_in(page, served.origin, login)
    await page.check("#duty")
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "yes")


async def bob_wins(served: Served, handoff_id: int, *, tell: bool = True) -> None:
    """Bob's Accept wins in the store, as the controller's conditional UPDATE decides; with
    ``tell``, the controller's "taken" follows, which every desk hears."""
    bob = served.people["bob"]
    async with served.store.transaction() as tx:
        await tx.agents.set_duty(bob.id, True)
        for earlier in await tx.handoffs.open_handoffs():  # one call at a time: his last
            if earlier.accepted_by == bob.id:               # caller has hung up
                await tx.handoffs.apply(earlier.id, HandoffEvent.CALLER_HUNG_UP)
        await tx.handoffs.accept(handoff_id, bob.id)
    if tell:
        served.events.publish(CARDS_TOPIC, Taken(handoff_id, bob.id))


async def test_news_on_the_desk_gives_way_to_the_next_card_and_after_a_moment(
    page: Page, served: Served,
) -> None:
    await page.clock.install()  # time runs as usual until the test moves it on
    await on_duty(page, served, "alice")
    notice = page.locator("#notice")
    first = await offer_card(served.store, served.events, caller_name="Jeanne Martin")
    await expect(page.locator(f'li.card[data-handoff-id="{first.id}"]')).to_be_visible()
    await bob_wins(served, first.id)
    await expect(notice).to_have_text("Bob took a call.")

    # A new caller waits: the news about the last one is not about them.
    second = await offer_card(served.store, served.events, caller_name="Paul Durand")
    await expect(page.locator(f'li.card[data-handoff-id="{second.id}"]')).to_be_visible()
    await expect(notice).to_have_text("")

    await bob_wins(served, second.id)
    await expect(notice).to_have_text("Bob took a call.")
    await page.clock.fast_forward(NEWS_MS)
    await expect(notice).to_have_text("")

    # A problem stays until the agent acts: it is not news.
    await page.route("**/api/duty", lambda route: route.fulfill(
        status=409, json={"error": "conflict", "reason": "Could not go off duty now."}))
    # A click, not uncheck(): the refusal may put the tick back before Playwright looks.
    await page.locator("#duty").click()
    await expect(notice).to_have_text("Could not go off duty now.")
    await expect(page.locator("#duty")).to_be_checked()
    await page.clock.fast_forward(NEWS_MS)
    await expect(notice).to_have_text("Could not go off duty now.")


@pytest.mark.parametrize("first", ["card_removed", "refusal"])
async def test_a_card_lost_to_a_colleague_says_who_took_it_then_goes(
    first: str, page: Page, served: Served,
) -> None:
    replies: list[str] = []
    page.on("websocket", lambda socket: socket.on(
        "framereceived", lambda frame: replies.append(str(frame))
        if '"reply"' in str(frame) else None))
    await page.clock.install()
    await on_duty(page, served, "alice")
    handoff = await offer_card(served.store, served.events, caller_name="Jeanne Martin")
    card = page.locator(f'li.card[data-handoff-id="{handoff.id}"]')
    await expect(card).to_be_visible()
    # Alice's Accept is on its way (held, as a slow dial would hold it) when Bob wins.
    served.commands.hold = asyncio.Event()
    await card.get_by_role("button", name="Accept").click()
    await until(lambda: served.commands.asked == [(handoff.id, served.people["alice"].id)])
    await expect(card.locator(".status")).to_have_text("Accepting…")
    if first == "card_removed":
        # The usual order: the winner's "taken" reaches her desk before her refusal.
        await bob_wins(served, handoff.id)
        await expect(card.locator(".status")).to_have_text("Bob already took this call")
        served.commands.hold.set()
    else:
        await bob_wins(served, handoff.id, tell=False)
        served.commands.hold.set()
        await expect(card.locator(".status")).to_have_text("Bob already took this call")
        served.events.publish(CARDS_TOPIC, Taken(handoff.id, served.people["bob"].id))
    await expect(card.get_by_role("button", name="Accept")).to_be_disabled()
    await expect(card).to_have_attribute("data-lost", "yes")
    # Her refusal has reached the page too: the card still says who took it.
    await until(lambda: any("already_taken" in reply for reply in replies))
    await expect(card.locator(".status")).to_have_text("Bob already took this call")
    await expect(page.locator("#notice")).not_to_contain_text("took a call")

    await page.clock.fast_forward(LOST_MS)
    await expect(card).to_have_count(0)
    await expect(page.locator("#no-cards")).to_be_visible()


async def test_an_emergency_card_comes_first_with_an_alert_until_it_is_gone(
    page: Page, served: Served, screenshots: Path,
) -> None:
    await on_duty(page, served, "alice")
    routine = await offer_card(served.store, served.events, caller_name="Paul Durand",
                               summary="Moving house")
    await expect(page.locator(f'li.card[data-handoff-id="{routine.id}"]')).to_be_visible()
    await expect(page.locator("#emergency")).to_be_hidden()

    urgent = await offer_card(served.store, served.events, caller_name="Marie Curie",
                              summary="Smells gas in the flat",
                              priority=handoff_priority("emergency", 1))
    card = page.locator(f'li.card[data-handoff-id="{urgent.id}"]')
    await expect(page.locator("li.card").first).to_have_attribute(
        "data-handoff-id", str(urgent.id))
    await expect(card.locator(".badge")).to_have_text("Emergency")
    await expect(page.locator("#emergency")).to_have_text(
        "Emergency: Marie Curie is waiting for a person.")
    await expect(page).to_have_title(re.compile(r"^\(!\) Emergency"))
    await page.screenshot(path=str(screenshots / "desk-emergency.png"))

    served.events.publish(CARDS_TOPIC, Withdrawn(urgent.id, "caller_hung_up"))
    await expect(card).to_have_count(0)
    await expect(page.locator("#emergency")).to_be_hidden()
    await expect(page).not_to_have_title(re.compile("Emergency"))


async def test_the_supervisor_board_follows_calls_as_they_start_and_end(
    page: Page, served: Served,
) -> None:
    await page.goto(f"{served.origin}/supervisor")
    await page.fill("#login", "sam")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{served.origin}/supervisor")
    await expect(page.locator("body")).to_have_attribute("data-live", "yes")
    await expect(page.locator("#board-empty")).to_be_visible()

    # The board's safety poll is 10 s: within 3 s, only the push can have told it.
    handoff = await offer_card(served.store, served.events, caller_name="Jeanne Martin")
    row = page.locator(f'#live-calls tr[data-call="{handoff.call_id}"]')
    await expect(row).to_contain_text("Jeanne Martin", timeout=3_000)
    await expect(row).to_contain_text("Waiting for a person")

    async with served.store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.CALLER_HUNG_UP)
        await tx.calls.close(handoff.call_id, CallOutcome.ABANDONED)
    served.events.publish(CARDS_TOPIC, CallEnded(handoff.call_id))
    await expect(row).to_have_count(0, timeout=3_000)
    await expect(page.locator("#board-empty")).to_be_visible()


# Opens a WebSocket from the page: "opened", or "refused" when the server says no.
SOCKET_PROBE = """url => new Promise(resolve => {
  const socket = new WebSocket(url);
  socket.onopen = () => { socket.close(); resolve("opened"); };
  socket.onerror = () => resolve("refused");
  socket.onclose = () => resolve("refused");
  setTimeout(() => resolve("no answer"), 5000);
})"""


@contextlib.asynccontextmanager
async def another_site() -> AsyncIterator[str]:
    """A page on another origin (same host, other port: same-site, so cookies go along)."""
    async def blank(_request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>elsewhere</title>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_browser_cannot_use_the_desk_signed_out_from_another_site_or_without_a_token(
    page: Page, served: Served,
) -> None:
    socket_url = served.origin.replace("http://", "ws://") + "/ws"
    await page.goto(f"{served.origin}/login")
    assert await page.evaluate(SOCKET_PROBE, socket_url) == "refused"  # signed out

    await sign_in(page, served.origin, "alice")
    assert await page.evaluate(SOCKET_PROBE, socket_url) == "opened"  # the genuine page
    # The dashboard's own page, signed in, but a request without the CSRF token.
    status = await page.evaluate("""async () => (await fetch("/api/duty", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({on_duty: true})})).status""")
    assert status == 403

    async with another_site() as elsewhere:
        await page.goto(elsewhere)
        assert await page.evaluate(SOCKET_PROBE, socket_url) == "refused"
        # A form-like cross-site POST goes out with the cookie; the server must refuse it.
        await page.evaluate("""url => fetch(url, {method: "POST", mode: "no-cors",
            credentials: "include", headers: {"Content-Type": "text/plain"},
            body: JSON.stringify({on_duty: true})}).catch(() => null)""",
                            f"{served.origin}/api/duty")
    async with served.store.transaction() as tx:
        assert not (await tx.agents.get(served.people["alice"].id)).on_duty


async def test_an_agent_opening_the_admin_page_gets_403(page: Page, served: Served) -> None:
    await sign_in(page, served.origin, "alice")
    response = await page.goto(f"{served.origin}/admin")
    assert response is not None and response.status == 403


async def test_a_caller_name_made_of_markup_is_shown_as_text(page: Page, served: Served) -> None:
    await sign_in(page, served.origin, "alice")
    evil = '<img src=x onerror="window.pwned=1">'
    handoff = await offer_card(served.store, served.events, caller_name=evil)
    card = page.locator(f'li.card[data-handoff-id="{handoff.id}"]')
    await expect(card.locator(".caller")).to_have_text(evil)
    assert await card.locator("img").count() == 0
    assert await page.evaluate("window.pwned === undefined")


async def test_the_page_catches_up_after_its_socket_drops(page: Page, served: Served) -> None:
    await sign_in(page, served.origin, "alice")
    # Her tab is dropped as a too-slow one would be; the page reconnects with since=.
    served.app[DASHBOARD].hub.drop_agent(served.people["alice"].id, CloseCode.RESYNC, "test")
    await expect(page.locator("body")).to_have_attribute("data-live", "no")
    handoff = await offer_card(served.store, served.events, caller_name="While Away")
    await expect(page.locator(f'li.card[data-handoff-id="{handoff.id}"]')).to_contain_text(
        "While Away")


async def test_an_accept_clicked_while_the_socket_is_down_goes_as_a_post(
    page: Page, served: Served,
) -> None:
    alice = served.people["alice"]
    await on_duty(page, served, "alice")
    handoff = await offer_card(served.store, served.events, caller_name="Jeanne Martin")
    card = page.locator(f'li.card[data-handoff-id="{handoff.id}"]')
    await expect(card).to_contain_text("Jeanne Martin")

    async def refuse(socket: Any) -> None:
        await socket.close()

    # The network between the tab and the server's socket is down; plain requests work.
    await page.route_web_socket(re.compile(r"/ws(\?|$)"), refuse)
    served.app[DASHBOARD].hub.drop_agent(alice.id, CloseCode.RESYNC, "test")
    await expect(page.locator("body")).to_have_attribute("data-live", "no")
    accept_posts: list[str] = []
    page.on("request", lambda r: accept_posts.append(r.url) if "/accept" in r.url else None)
    await card.get_by_role("button", name="Accept").click()
    await until(lambda: served.commands.accepted == [(handoff.id, alice.id)])
    await expect(card.locator(".status")).to_contain_text("Connecting")
    assert accept_posts == [f"{served.origin}/api/handoffs/{handoff.id}/accept"]


async def test_an_agent_on_a_call_is_offered_no_card_until_the_call_is_over(
    page: Page, served: Served,
) -> None:
    alice = served.people["alice"]
    await on_duty(page, served, "alice")
    mine = await offer_card(served.store, served.events, caller_name="Jeanne Martin")
    waiting = await offer_card(served.store, served.events, caller_name="Paul Durand",
                               caller_number="+33987654321")
    waiting_card = page.locator(f'li.card[data-handoff-id="{waiting.id}"]')
    await expect(waiting_card).to_be_visible()

    await page.locator(f'li.card[data-handoff-id="{mine.id}"]').get_by_role(
        "button", name="Accept").click()
    await until(lambda: served.commands.accepted == [(mine.id, alice.id)])
    served.events.publish(CARDS_TOPIC, Taken(mine.id, alice.id))
    # Paul still waits for a person, but not for Alice, who is talking to Jeanne.
    await expect(waiting_card).to_be_hidden()
    await expect(page.locator("#busy-note")).to_contain_text("You are on a call")

    async with served.store.transaction() as tx:
        await tx.handoffs.apply(mine.id, HandoffEvent.CALLER_HUNG_UP)
    served.events.publish(CARDS_TOPIC, CallEnded(mine.call_id))
    await expect(waiting_card).to_be_visible()
    await expect(page.locator("#busy-note")).to_be_hidden()


async def test_the_presence_menu_off_duty_says_why_it_refuses_and_offline_goes_off_duty(
    page: Page, served: Served,
) -> None:
    alice = served.people["alice"]
    await sign_in(page, served.origin, "alice")
    presence = page.locator("#presence")
    await presence.select_option("away")
    await expect(page.locator("#notice")).to_have_text("Go on duty before choosing a presence.")
    # The menu shows what the server has, not the choice it refused.
    await expect(presence).to_have_value("offline")
    async with served.store.transaction() as tx:
        assert (await tx.agents.get(alice.id)).presence is Presence.OFFLINE

    await page.check("#duty")
    await expect(presence).to_have_value("available")
    await presence.select_option("offline")
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "no")
    await expect(page.locator("#duty")).not_to_be_checked()
    async with served.store.transaction() as tx:
        assert not (await tx.agents.get(alice.id)).on_duty
