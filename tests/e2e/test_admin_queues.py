"""The admin page's queues in a real Chromium: a queue added with the form, its members'
levels and strategy changed and saved, a bad level refused with the server's reason on
the page, and the queue removed."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from handoff.queues import Strategy
from tests.tools_fixtures import ToolServed
from web.bench.softphone_rig import sign_in

pytestmark = pytest.mark.e2e


async def test_an_admin_adds_changes_and_removes_a_queue_on_the_page(
    page: Page, site: ToolServed,
) -> None:
    await sign_in(page, site.origin, "ada", path="/admin")
    form = page.locator("#new-queue")
    await form.locator("[name=name]").fill("support")
    await form.locator("[name=strategy]").select_option("round_robin")
    await form.locator("[name=members]").fill("alice:4 bob")
    await form.locator("button[type=submit]").click()
    support = page.locator('#queues tr[data-queue="support"]')
    await expect(support.locator("input.members")).to_have_value("alice:4 bob:3")
    await expect(support).to_contain_text("0/0 answered")

    await support.locator("input.members").fill("bob:9")
    await support.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_contain_text("a level is 1 to 5")
    await support.locator("input.members").fill("bob:5 alice:2")
    await support.locator("select").select_option("skills_weighted")
    await support.locator("input.ring_s").fill("8")
    await support.locator("input.disposition_required").check()
    await support.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_have_text("Queue support saved.")
    async with site.store.transaction() as tx:
        queue = await tx.queues.by_name("support")
        assert queue is not None
        members = [(m.login, m.level) for m in await tx.queues.members(queue.id)]
    assert (queue.strategy, queue.ring_s, queue.disposition_required, members) == (
        Strategy.SKILLS_WEIGHTED, 8, True, [("bob", 5), ("alice", 2)])

    page.once("dialog", lambda dialog: dialog.accept())
    await support.locator("button.remove").click()
    await expect(page.locator("#admin-status")).to_have_text("Queue support removed.")
    await expect(page.locator("#queues tbody tr")).to_have_count(0)


async def test_an_admin_writes_a_queues_business_hours_one_a_line(
    page: Page, site: ToolServed,
) -> None:
    await sign_in(page, site.origin, "ada", path="/admin")
    form = page.locator("#new-queue")
    await form.locator("[name=name]").fill("support")
    await form.locator("button[type=submit]").click()
    support = page.locator('#queues tr[data-queue="support"]')
    await support.locator("textarea.hours").fill("2026-12-25\nMon-Fri 9:00-17:00")
    await support.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_have_text("Queue support saved.")
    await expect(support.locator("textarea.hours")).to_have_value(
        "mon-fri 09:00-17:00\n2026-12-25")
    await support.locator("textarea.hours").fill("sat 12:00-10:00")
    await support.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_contain_text("two spans")
    async with site.store.transaction() as tx:
        queue = await tx.queues.by_name("support")
    assert queue is not None
    assert (queue.hours, queue.holidays) == (["mon-fri 09:00-17:00"], ["2026-12-25"])


async def test_an_admin_gives_a_queue_its_own_wrap_up_time_and_takes_it_back(
    page: Page, site: ToolServed,
) -> None:
    await sign_in(page, site.origin, "ada", path="/admin")
    form = page.locator("#new-queue")
    await form.locator("[name=name]").fill("orders")
    await form.locator("button[type=submit]").click()
    orders = page.locator('#queues tr[data-queue="orders"]')
    wrap_up = orders.locator("input.wrap_up_s")
    await expect(wrap_up).to_have_value("")  # the site's setting
    await wrap_up.fill("45")
    # The page says "saved" before it draws the list anew, and the new row shows what
    # was typed: the mark on the old row tells them apart. Clearing the old one would
    # lose the clearing when the new one replaces it.
    await orders.evaluate("row => { row.dataset.drawn = 'before'; }")
    await orders.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_have_text("Queue orders saved.")
    await expect(orders).not_to_have_attribute("data-drawn", "before")
    await expect(wrap_up).to_have_value("45")

    async def limit() -> int | None:
        async with site.store.transaction() as tx:
            queue = await tx.queues.by_name("orders")
        assert queue is not None
        return queue.wrap_up_s

    assert await limit() == 45
    await page.evaluate("sb.say('admin-status', '')")  # the next save says so afresh
    await wrap_up.fill("")
    await orders.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_have_text("Queue orders saved.")
    await expect(wrap_up).to_have_value("")
    assert await limit() is None
