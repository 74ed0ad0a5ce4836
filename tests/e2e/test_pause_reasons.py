"""Pause reasons and dispositions in a real Chromium: the agent chooses "Away: Lunch" in
the presence menu, the desk says how long the pause has lasted, the Admin page's table
shows the reason live, and "Available" ends the pause; the admin adds and removes
reasons on the Admin page; in wrap-up the agent picks the last call's disposition."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Page, Route, expect

from handoff.agents import Presence
from handoff.events import AGENTS_TOPIC, AgentChanged
from handoff.handoffs import HandoffEvent
from tests.dashboard_fixtures import Served
from tests.unit.test_call_panel import connected_call
from web.bench.softphone_rig import sign_in

pytestmark = pytest.mark.e2e


async def test_an_agent_chooses_a_pause_reason_on_the_desk_and_the_admin_table_shows_it(
    page: Page, served: Served,
) -> None:
    async with served.store.transaction() as tx:
        lunch = await tx.pause_reasons.add("Lunch", productive=False)
        await tx.pause_reasons.add("Training", productive=True)
    alice = served.people["alice"]
    admin_page = await page.context.browser.new_page()  # type: ignore[union-attr]
    await sign_in(admin_page, served.origin, "ada", path="/admin")
    table_state = admin_page.locator(f'#agents tr[data-agent="{alice.id}"] td.agent-state')

    await sign_in(page, served.origin, "alice")
    await page.check("#duty")
    presence = page.locator("#presence")
    await expect(presence).to_have_value("available")
    await presence.select_option(label="Away: Lunch")
    await expect(page.locator("#my-state")).to_have_text(re.compile(r"^Away: Lunch · 0:\d\d$"))
    async with served.store.transaction() as tx:
        agent = await tx.agents.get(alice.id)
    assert (agent.presence, agent.pause_reason_id) == (Presence.AWAY, lunch.id)
    await expect(table_state).to_have_text(
        re.compile(r"^Away: Lunch, not productive \(0:\d\d\)$"))

    # A reload shows the pause the server has, reason included.
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-live", "yes")
    await expect(presence).to_have_value(f"away:{lunch.id}")

    await presence.select_option("available")
    await expect(page.locator("#my-state")).to_be_hidden()
    await expect(table_state).to_have_text("Available")
    async with served.store.transaction() as tx:
        assert (await tx.agents.get(alice.id)).pause_reason_id is None
    await admin_page.close()


async def test_an_admin_adds_and_removes_pause_reasons_on_the_page(
    page: Page, served: Served,
) -> None:
    await sign_in(page, served.origin, "ada", path="/admin")
    form = page.locator("#new-pause-reason")
    await form.locator("[name=name]").fill("Formation")
    await form.locator("[name=productive]").select_option("true")
    await form.locator("button[type=submit]").click()
    formation = page.locator('#pause-reasons tr[data-name="Formation"]')
    await expect(formation).to_contain_text("Productive")
    # The server's reason for a refusal shows on the page; nothing is added.
    await form.locator("[name=name]").fill("formation")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#admin-status")).to_contain_text(
        "there is already a pause reason 'Formation'")
    await expect(page.locator("#pause-reasons tbody tr")).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.accept())
    await formation.locator("button.remove").click()
    await expect(page.locator("#admin-status")).to_have_text("Pause reason Formation removed.")
    await expect(page.locator("#pause-reasons tbody tr")).to_have_count(0)
    async with served.store.transaction() as tx:
        assert await tx.pause_reasons.listed() == []

    dispositions = page.locator("#new-disposition")
    await dispositions.locator("[name=name]").fill("Vente")
    await dispositions.locator("button[type=submit]").click()
    await expect(page.locator("#admin-status")).to_have_text("Disposition Vente added.")
    await expect(page.locator('#dispositions tr[data-name="Vente"]')).to_be_visible()
    async with served.store.transaction() as tx:
        assert [d.name for d in await tx.dispositions.listed()] == ["Vente"]


async def test_an_agent_in_wrap_up_picks_the_disposition_of_their_last_call_on_the_desk(
    page: Page, served: Served,
) -> None:
    async with served.store.transaction() as tx:
        sale = await tx.dispositions.add("Sale")
        await tx.dispositions.add("Complaint")
    handoff = await connected_call(served, "alice")
    alice = served.people["alice"]
    await sign_in(page, served.origin, "alice")
    await page.check("#duty")
    # On duty for the server too before the wrap-up is set: a duty change still on its
    # way would land after it and make her available.
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "yes")
    async with served.store.transaction() as tx:
        assert (await tx.agents.get(alice.id)).on_duty
    form = page.locator("#disposition-form")
    # As the controller ends her part of the call and begins her wrap-up.
    async with served.store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.END)
        await tx.agents.set_presence(alice.id, Presence.WRAP_UP)
    served.events.publish(AGENTS_TOPIC, AgentChanged(alice.id))
    await expect(form).to_be_visible()
    await expect(page.locator("#disposition-caller")).to_have_text("Jeanne Martin")
    await page.select_option("#disposition-choice", label="Sale")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#notice")).to_have_text("Disposition saved.")
    await expect(form).to_be_hidden()
    async with served.store.transaction() as tx:
        assert (await tx.calls.get(handoff.call_id)).disposition_id == sale.id


async def test_the_answer_to_going_on_duty_does_not_undo_a_wrap_up_pushed_before_it(
    page: Page, served: Served,
) -> None:
    # The duty change's answer is held back in the browser until the server has set
    # her wrap-up and the desk has shown it: the push overtakes the answer, as it can
    # on a busy network. The older answer must not make her available again.
    async with served.store.transaction() as tx:
        await tx.dispositions.add("Sale")
    handoff = await connected_call(served, "alice")
    alice = served.people["alice"]
    async with served.store.transaction() as tx:
        await tx.agents.set_duty(alice.id, False)  # so that ticking the box is a change
    await sign_in(page, served.origin, "alice")
    # The desk shows the server's state (the socket's snapshot) before the click: a
    # snapshot landing just after it would be a second change of the box.
    await expect(page.locator("body")).to_have_attribute("data-live", "yes")
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "no")
    release = asyncio.Event()
    answered = asyncio.Event()

    async def hold_the_answer(route: Route) -> None:
        response = await route.fetch()
        answered.set()
        await release.wait()
        await route.fulfill(response=response)

    await page.route("**/api/duty", hold_the_answer)
    await page.check("#duty")
    await asyncio.wait_for(answered.wait(), 10)  # the server has her on duty
    async with served.store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.END)
        await tx.agents.set_presence(alice.id, Presence.WRAP_UP)
    served.events.publish(AGENTS_TOPIC, AgentChanged(alice.id))
    form = page.locator("#disposition-form")
    await expect(form).to_be_visible()
    release.set()
    await expect(page.locator("#duty")).to_be_enabled()  # the answer has come
    await expect(page.locator("#duty")).to_be_checked()
    await expect(page.locator("#presence")).to_have_value("wrap_up")
    await expect(form).to_be_visible()
