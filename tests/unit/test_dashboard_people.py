"""The admin page's disable, enable and remove: sessions and sockets end at once, the
PBX is asked to drop the endpoint, refusals say why, and the history stays."""

from __future__ import annotations

from typing import Any

import aiohttp

from handoff.store.models import Agent
from tests.dashboard_fixtures import Browser, Browsers, on_duty, signed_in
from tests.tools_fixtures import ToolServed
from web import people
from web.dashboard import DASHBOARD
from web.dashboard.hub import CloseCode


def _socket(browser: Browser, site: ToolServed) -> Any:
    return browser.http.ws_connect("/ws", headers={"Origin": site.origin}, heartbeat=None)


async def _agent(site: ToolServed, login: str) -> Agent:
    async with site.store.transaction() as tx:
        agent = await tx.agents.by_login(login)
    assert agent is not None
    return agent


async def test_disabling_a_person_ends_their_sessions_and_sockets_at_once(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    alice = await signed_in(browsers, "alice")
    await on_duty(alice)
    alice_id = site.people["alice"].id
    async with _socket(alice, site) as ws:
        await ws.receive_json(timeout=5)  # the snapshot: she is connected
        response = await admin.post_json(f"/api/admin/agents/{alice_id}/disable", {})
        assert response.status == 200
        body = await response.json()
        assert body["agent"]["enabled"] is False and body["endpoint_live"] is True
        async with site.store.transaction() as tx:
            # Gone, not merely refused when next presented.
            assert await tx.sessions.count_for_agent(alice_id) == 0
        # Closed by the request itself, not by the periodic revalidation.
        closing = await ws.receive(timeout=5)
        while closing.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            closing = await ws.receive(timeout=5)
        assert ws.close_code == CloseCode.SIGNED_OUT
    assert site.endpoint_reloads == ["reload"]
    async with alice.http.get("/api/history", allow_redirects=False) as me:
        assert me.status == 401
    agent = await _agent(site, "alice")
    assert not agent.on_duty and agent.disabled_at is not None
    # Signing in again is refused (403 "disabled", not 401 "wrong password").
    again = Browser(site.origin)
    try:
        assert (await again.login("alice")).status == 403
    finally:
        await again.close()
    async with admin.http.get("/api/admin/audit") as response:
        actions = [(e["actor"], e["action"]) for e in (await response.json())["events"]]
    assert ("ada", "agent_disabled") in actions and ("alice", "login_refused") in actions
    async with admin.http.get("/admin") as page:
        html = await page.text()
    assert f'data-agent="{alice_id}" data-action="enable"' in html
    # Enabled again, she signs in.
    assert (await admin.post_json(f"/api/admin/agents/{alice_id}/enable", {})).status == 200
    back = Browser(site.origin)
    try:
        assert (await back.login("alice")).status == 303
    finally:
        await back.close()


async def test_the_last_admin_and_oneself_cannot_be_disabled_and_removal_is_final(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    ada_id, bob_id = site.people["ada"].id, site.people["bob"].id
    own = await admin.post_json(f"/api/admin/agents/{ada_id}/disable", {})
    assert own.status == 409 and (await own.json())["error"] == "own_account"
    removed = await admin.post_json(f"/api/admin/agents/{bob_id}/remove", {})
    assert removed.status == 200 and (await removed.json())["agent"]["removed"] is True
    again = await admin.post_json(f"/api/admin/agents/{bob_id}/enable", {})
    assert again.status == 409 and "removed" in (await again.json())["reason"]
    missing = await admin.post_json("/api/admin/agents/9999/disable", {})
    assert missing.status == 404
    forged = await admin.post_json(f"/api/admin/agents/{bob_id}/disable", {}, csrf="forged")
    assert forged.status == 403


async def test_people_changes_are_for_admins_only(
    site: ToolServed, browsers: Browsers,
) -> None:
    supervisor = await signed_in(browsers, "sam")
    response = await supervisor.post_json(
        f"/api/admin/agents/{site.people['alice'].id}/disable", {})
    assert response.status == 403
    assert (await _agent(site, "alice")).enabled


async def test_a_session_that_raced_the_disable_proves_nothing(site: ToolServed) -> None:
    # A sign-in whose password check passed just before the admin's disable committed
    # gets a session row after the sessions were deleted: its first request ends it.
    sessions = site.app[DASHBOARD].sessions
    alice_id = site.people["alice"].id
    async with site.store.transaction() as tx:
        await people.disable(tx, alice_id, actor="ada")
    token, _ = await sessions.start(alice_id)
    assert await sessions.resolve(token) is None
    async with site.store.transaction() as tx:
        assert await tx.sessions.count_for_agent(alice_id) == 0


async def test_an_admin_renames_a_person_and_gives_them_a_new_password(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    alice = await signed_in(browsers, "alice")
    alice_id, ada_id = site.people["alice"].id, site.people["ada"].id

    renamed = await admin.post_json(f"/api/admin/agents/{alice_id}/name",
                                    {"display_name": "  Alice Martin "})
    assert renamed.status == 200
    assert (await renamed.json())["agent"]["display_name"] == "Alice Martin"
    agent = await _agent(site, "alice")
    assert agent.display_name == "Alice Martin" and agent.login == "alice"
    for bad in ({"display_name": " "}, {"display_name": "x" * 129}, {"display_name": 7}, {}):
        refused = await admin.post_json(f"/api/admin/agents/{alice_id}/name", bad)
        assert refused.status == 400, bad
    assert (await admin.post_json("/api/admin/agents/9999/name",
                                  {"display_name": "Nobody"})).status == 404

    async with _socket(alice, site) as ws:
        await ws.receive_json(timeout=5)
        made = await admin.post_json(f"/api/admin/agents/{alice_id}/password", {})
        assert made.status == 200
        password = (await made.json())["one_time_password"]
        closing = await ws.receive(timeout=5)
        while closing.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            closing = await ws.receive(timeout=5)
        assert ws.close_code == CloseCode.SIGNED_OUT
    # Her open session ended with the old password; only the new one signs in.
    async with alice.http.get("/api/history", allow_redirects=False) as me:
        assert me.status == 401
    again = Browser(site.origin)
    try:
        assert (await again.login("alice")).status == 401
        assert (await again.login("alice", password)).status == 303
    finally:
        await again.close()
    own = await admin.post_json(f"/api/admin/agents/{ada_id}/password", {})
    assert own.status == 409 and (await own.json())["error"] == "own_account"

    async with admin.http.get("/api/admin/audit") as response:
        lines = [(e["actor"], e["action"], e["detail"])
                 for e in (await response.json())["events"]]
    assert ("ada", "agent_renamed", {"from": "Alice", "to": "Alice Martin"}) in lines
    assert ("ada", "password_reset", {}) in lines
    supervisor = await signed_in(browsers, "sam")
    for path, body in (("name", {"display_name": "Mallory"}), ("password", {})):
        forbidden = await supervisor.post_json(f"/api/admin/agents/{alice_id}/{path}", body)
        assert forbidden.status == 403
    assert (await _agent(site, "alice")).display_name == "Alice Martin"
