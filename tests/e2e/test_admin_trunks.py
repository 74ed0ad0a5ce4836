"""The admin page's trunks in a real Chromium: the settings file's trunk read-only, a
registering trunk added with the form, its status shown, a change saved, and a bad
pattern refused with the server's reason on the page."""

from __future__ import annotations

import pytest
from playwright.async_api import BrowserContext, Page, expect

from pbx.trunk_status import TrunkState, TrunkStatus
from tests.tools_fixtures import ToolServed
from web.bench.softphone_rig import sign_in

pytestmark = pytest.mark.e2e


async def test_an_admin_adds_a_registering_trunk_and_sees_its_status(
    page: Page, site: ToolServed,
) -> None:
    await sign_in(page, site.origin, "ada", path="/admin")
    rows = page.locator("#trunks tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("carrier (settings)")
    await expect(rows.first.locator("button")).to_have_count(0)  # read-only

    site.trunk_statuses["acme"] = TrunkStatus(TrunkState.REGISTERED)
    form = page.locator("#new-trunk")
    await form.locator("[name=name]").fill("acme")
    await form.locator("[name=host]").fill("sip.acme.example")
    await form.locator("[name=auth]").select_option("register")
    await form.locator("[name=username]").fill("4420")
    await form.locator("[name=password]").fill("s3cret-pass")
    await form.locator("[name=caller_id]").fill("+15550100")
    await form.locator("[name=patterns]").fill("_NXXNXXXXXX")
    await form.locator("button[type=submit]").click()
    acme = page.locator('#trunks tr[data-trunk="acme"]')
    await expect(acme).to_contain_text("registers as 4420")
    await expect(acme).to_contain_text("registered")
    # The password never comes back to the page.
    assert "s3cret" not in await page.content()

    patterns = acme.locator("td").nth(6).locator("input")
    await patterns.fill("_9X!")
    await acme.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_contain_text("not a strict number pattern")
    await patterns.fill("_NXXNXXXXXX _1NXXNXXXXXX")
    await acme.locator("td").nth(7).locator("input").check()  # international
    await acme.locator("button.save").click()
    await expect(page.locator("#admin-status")).to_have_text("Trunk acme saved.")
    async with site.store.transaction() as tx:
        row = await tx.trunks.by_name("acme")
    assert row is not None
    assert (row.patterns, row.allow_international, row.password) == (
        ["_NXXNXXXXXX", "_1NXXNXXXXXX"], True, "s3cret-pass")
    await expect(page.locator("#audit")).to_contain_text("changed trunk acme")


async def test_the_admin_sections_are_one_click_away(page: Page, site: ToolServed) -> None:
    await page.set_viewport_size({"width": 1280, "height": 800})
    await sign_in(page, site.origin, "ada", path="/admin")
    sections = page.get_by_role("navigation", name="Admin sections")
    trunks = page.get_by_role("heading", name="Trunks")
    await expect(trunks).not_to_be_in_viewport()
    await sections.get_by_role("link", name="Trunks").click()
    await expect(trunks).to_be_in_viewport()
    # The list stays in view at the top, so the next section is one click away too.
    await expect(sections).to_be_in_viewport()
    await sections.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_in_viewport()


async def test_an_admin_renames_a_person_and_hands_out_a_new_password(
    page: Page, site: ToolServed, context: BrowserContext,
) -> None:
    alice_id = site.people["alice"].id
    # Alice is signed in in a browser of her own.
    hers = await context.browser.new_context() if context.browser else None
    assert hers is not None
    try:
        alice = await hers.new_page()
        await sign_in(alice, site.origin, "alice", path="/")
        await sign_in(page, site.origin, "ada", path="/admin")
        name = page.get_by_label("Name of alice")
        await name.fill("Alice Martin")
        await name.press("Enter")
        await expect(page.locator("#audit")).to_contain_text("Ada renamed Alice to Alice Martin")
        async with site.store.transaction() as tx:
            assert (await tx.agents.get(alice_id)).display_name == "Alice Martin"

        page.once("dialog", lambda dialog: dialog.accept())
        await page.locator(f'button.new-password[data-agent="{alice_id}"]').click()
        shown = page.locator("#credentials")
        await expect(shown).to_contain_text("New dashboard password for alice, shown once")
        password = (await shown.inner_text()).splitlines()[1].strip()
        await expect(page.locator("#audit")).to_contain_text("Ada reset Alice Martin's password")
        # Her tab is signed out at once; the new password lets her back in.
        await alice.reload()
        await expect(alice.locator("#password")).to_be_visible()
        await alice.fill("#login", "alice")
        await alice.fill("#password", password)
        await alice.click("button[type=submit]")
        await expect(alice.get_by_role("button", name="Sign out")).to_be_visible()
    finally:
        await hers.close()
