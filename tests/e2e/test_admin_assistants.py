"""The admin page's assistants in a real Chromium: create one with its numbers and
engine (its token shown once), give it a new token, disable it; write its restricted
topics."""

from __future__ import annotations

import pytest
from playwright.async_api import Dialog, Page, expect

from handoff.assistants import FallbackKind
from tests.dashboard_fixtures import Served
from web.ai_api import hash_control_token
from web.bench.softphone_rig import sign_in

pytestmark = pytest.mark.e2e


async def _stored_hash(served: Served) -> str:
    async with served.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None
    return sales.control_token_hash


def _shown_token(text: str) -> str:
    return text.strip().splitlines()[-1].strip()


async def test_an_admin_creates_an_assistant_rotates_its_token_and_disables_it(
    page: Page, served: Served,
) -> None:
    await sign_in(page, served.origin, "ada", path="/admin")
    form = page.locator("#new-assistant")
    await form.locator("input[name=name]").fill("sales")
    await form.locator("input[name=numbers]").fill("2100 _21XX")
    await form.locator("input[name=engine]").fill("127.0.0.1:9092")
    await form.locator("button[type=submit]").click()
    shown = page.locator("#assistant-token")
    await expect(shown).to_contain_text("Control token of sales, shown once")
    first = _shown_token(await shown.inner_text())
    assert await _stored_hash(served) == hash_control_token(first)
    row = page.locator('#assistants tr[data-assistant="sales"]')
    await expect(row.locator("input.numbers")).to_have_value("2100 _21XX")
    await expect(row.locator("input.engine")).to_have_value("127.0.0.1:9092")

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)
    await row.get_by_role("button", name="New token").click()
    await expect(shown).not_to_contain_text(first)
    second = _shown_token(await shown.inner_text())
    assert await _stored_hash(served) == hash_control_token(second)

    await row.get_by_role("button", name="Disable").click()
    await expect(row).to_contain_text("disabled")
    await expect(row.get_by_role("button", name="Enable")).to_be_visible()
    # A number that does not fit says why, in the page.
    await row.locator("input.numbers").fill("_X.")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("not a strict number pattern")


async def test_an_admin_writes_restricted_topics_one_a_line(page: Page, served: Served) -> None:
    await sign_in(page, served.origin, "ada", path="/admin")
    form = page.locator("#new-assistant")
    await form.locator("input[name=name]").fill("sales")
    await form.locator("input[name=engine]").fill("builtin")
    await form.locator("button[type=submit]").click()
    row = page.locator('#assistants tr[data-assistant="sales"]')
    topics = row.locator("textarea.topics")
    await topics.fill("billing=billing dispute, refund\n\nplainte = réclamation\n")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("sales saved")
    # Shown back as stored: one a line, phrases after the name.
    await expect(row.locator("textarea.topics")).to_have_value(
        "billing=billing dispute, refund\nplainte=réclamation")
    async with served.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None and sales.restricted_topics == [
        {"name": "billing", "phrases": ["billing dispute", "refund"]},
        {"name": "plainte", "phrases": ["réclamation"]}]
    # A line that is not a topic says why, in the page.
    await row.locator("textarea.topics").fill("Billing Dispute")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("a topic is NAME=phrase,phrase")


async def test_an_admin_writes_business_hours_and_holidays_one_a_line(
    page: Page, served: Served,
) -> None:
    await sign_in(page, served.origin, "ada", path="/admin")
    form = page.locator("#new-assistant")
    await form.locator("input[name=name]").fill("sales")
    await form.locator("input[name=engine]").fill("builtin")
    await form.locator("button[type=submit]").click()
    row = page.locator('#assistants tr[data-assistant="sales"]')
    await row.locator("textarea.hours").fill("Mon-Fri 9:00-17:00\n2026-12-25\n\nsat 10:00-12:00")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("sales saved")
    # Shown back as stored: the spans in one spelling, then the holidays.
    await expect(row.locator("textarea.hours")).to_have_value(
        "mon-fri 09:00-17:00\nsat 10:00-12:00\n2026-12-25")
    async with served.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None
    assert (sales.hours, sales.holidays) == (
        ["mon-fri 09:00-17:00", "sat 10:00-12:00"], ["2026-12-25"])
    # A span that runs past midnight says how to write it, in the page; nothing changes.
    await row.locator("textarea.hours").fill("fri 22:00-06:00")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("two spans")
    async with served.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None and sales.hours == ["mon-fri 09:00-17:00", "sat 10:00-12:00"]


async def test_an_admin_writes_a_dtmf_menu_one_key_a_line(page: Page, served: Served) -> None:
    await sign_in(page, served.origin, "ada", path="/admin")
    form = page.locator("#new-assistant")
    for name in ("sales", "front"):
        await form.locator("input[name=name]").fill(name)
        await form.locator("input[name=engine]").fill("builtin")
        await form.locator("button[type=submit]").click()
        await expect(page.locator(f'#assistants tr[data-assistant="{name}"]')).to_be_visible()
    row = page.locator('#assistants tr[data-assistant="front"]')
    await row.locator("input.menu-prompt").fill("Press 1 for sales.")
    await row.locator("textarea.menu").fill("1 = assistant:sales\n")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("front saved")
    await expect(row.locator("textarea.menu")).to_have_value("1=assistant:sales")
    async with served.store.transaction() as tx:
        front = await tx.assistants.by_name("front")
    assert front is not None and front.menu == {"prompt": "Press 1 for sales.",
                                                "options": ["1=assistant:sales"]}
    # A key that leads nowhere says why, in the page.
    await row.locator("textarea.menu").fill("2=queue:billing")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("there is no queue 'billing'")


async def test_an_admin_writes_announcements_one_moment_a_line(
    page: Page, served: Served,
) -> None:
    await sign_in(page, served.origin, "ada", path="/admin")
    form = page.locator("#new-assistant")
    await form.locator("input[name=name]").fill("sales")
    await form.locator("input[name=engine]").fill("builtin")
    await form.locator("button[type=submit]").click()
    row = page.locator('#assistants tr[data-assistant="sales"]')
    await row.locator("textarea.announcements").fill(
        "transfer = One moment, please.\nhandover=You are now speaking with a person.")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("sales saved")
    # Shown back in the moments' order.
    await expect(row.locator("textarea.announcements")).to_have_value(
        "handover=You are now speaking with a person.\ntransfer=One moment, please.")
    await row.locator("textarea.announcements").fill("hold=music")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text(
        "one of handover, takeover, transfer")


async def test_an_admin_chooses_a_voicemail_as_the_fallback(page: Page, served: Served) -> None:
    await sign_in(page, served.origin, "ada", path="/admin")
    form = page.locator("#new-assistant")
    await form.locator("input[name=name]").fill("sales")
    await form.locator("input[name=engine]").fill("builtin")
    await form.locator("button[type=submit]").click()
    row = page.locator('#assistants tr[data-assistant="sales"]')
    fallback = row.locator("select").nth(1)  # the handoff level's, then the fallback's
    await expect(fallback.locator("option[value=voicemail]")).to_have_text(
        "Voicemail (a call-back with the message)")
    await fallback.select_option("voicemail")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#admin-status")).to_contain_text("sales saved")
    await expect(row.locator("select").nth(1)).to_have_value("voicemail")
    async with served.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None and sales.fallback_kind is FallbackKind.VOICEMAIL
