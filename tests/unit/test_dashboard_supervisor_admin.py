"""The supervisor board's and the admin page's API: roles, CSRF, and 4xx with reasons."""

from __future__ import annotations

import pytest

from handoff.supervision import Mode, SupervisionRefused
from tests.dashboard_fixtures import Browser, Browsers, offer_card, signed_in
from tests.tools_fixtures import ToolServed


async def test_the_board_lists_live_calls_for_supervisors_only(
    site: ToolServed, browsers: Browsers,
) -> None:
    handoff = await offer_card(site.store, site.events)
    supervisor = await signed_in(browsers, "sam")
    async with supervisor.http.get("/api/supervisor/calls") as response:
        calls = (await response.json())["calls"]
    assert response.status == 200
    assert [(c["id"], c["state"], c["agent"]) for c in calls] == [
        (handoff.call_id, "handoff_pending", None)]
    agent = await signed_in(browsers, "alice")
    async with agent.http.get("/api/supervisor/calls") as response:
        assert response.status == 403 and (await response.json())["error"] == "forbidden"


async def test_the_board_and_panel_show_a_session_held_on_another_node(
    site: ToolServed, browsers: Browsers,
) -> None:
    """Sam listens to a call node A holds, from this node's board: node A's controller
    recorded the session in the shared store, and this node, which holds nothing of it,
    shows it on his board's row and his panel; once node A lets go, neither does."""
    call_id = (await offer_card(site.store, site.events)).call_id
    sam = site.people["sam"].id
    async with site.store.transaction() as tx:
        await tx.supervisions.hold(call_id, sam, "listen", "node-a")
    supervisor = await signed_in(browsers, "sam")

    async def shown() -> tuple[str | None, str | None]:
        async with supervisor.http.get("/api/supervisor/calls") as response:
            [row] = (await response.json())["calls"]
        async with supervisor.http.get("/api/calls/current") as response:
            panel = (await response.json())["call"]
        return row["supervising"], panel and panel["supervising"]

    assert await shown() == ("listen", "listen")
    async with site.store.transaction() as tx:
        await tx.supervisions.hold(call_id, sam, "whisper", "node-a")
    assert await shown() == ("whisper", "whisper")
    async with site.store.transaction() as tx:
        await tx.supervisions.let_go(call_id, sam)
    assert await shown() == (None, None)
    # Nobody else's session shows as theirs.
    async with site.store.transaction() as tx:
        await tx.supervisions.hold(call_id, site.people["ada"].id, "barge", "node-a")
    assert await shown() == (None, None)


async def test_supervisor_commands_reach_supervision_with_their_phone(
    site: ToolServed, browsers: Browsers,
) -> None:
    call_id = (await offer_card(site.store, site.events)).call_id
    supervisor = await signed_in(browsers, "sam")
    for mode in ("listen", "whisper", "barge", "take_over"):
        response = await supervisor.post_json(f"/api/supervisor/calls/{call_id}/{mode}", {})
        assert response.status == 200, await response.text()
    sam = site.people["sam"].id
    assert site.supervision.asked == [(call_id, sam, m) for m in Mode]
    stopped = await supervisor.post_json(f"/api/supervisor/calls/{call_id}/stop", {})
    assert stopped.status == 200
    again = await supervisor.post_json(f"/api/supervisor/calls/{call_id}/stop", {})
    assert again.status == 404


async def test_supervisor_refusals_say_why(
    site: ToolServed, browsers: Browsers,
) -> None:
    call_id = (await offer_card(site.store, site.events)).call_id
    supervisor = await signed_in(browsers, "sam")
    unknown = await supervisor.post_json(f"/api/supervisor/calls/{call_id}/spy", {})
    assert unknown.status == 404 and "listen, whisper" in (await unknown.json())["reason"]
    site.supervision.refuse = SupervisionRefused("no_agent", "whisper needs an agent")
    refused = await supervisor.post_json(f"/api/supervisor/calls/{call_id}/whisper", {})
    assert refused.status == 409
    assert await refused.json() == {"error": "no_agent", "reason": "whisper needs an agent"}
    no_token = await supervisor.post_json(f"/api/supervisor/calls/{call_id}/listen", {},
                                          csrf="")
    assert no_token.status == 403 and (await no_token.json())["error"] == "csrf"
    agent = await signed_in(browsers, "alice")
    forbidden = await agent.post_json(f"/api/supervisor/calls/{call_id}/listen", {})
    assert forbidden.status == 403


async def test_an_admin_creates_an_agent_who_signs_in_with_the_one_time_password(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    created = await admin.post_json("/api/admin/agents", {
        "login": "grace", "display_name": "Grace Hopper", "role": "supervisor",
        "endpoint_kind": "deskphone"})
    assert created.status == 201
    body = await created.json()
    assert body["agent"]["role"] == "supervisor" and body["sip"]["user"] == "agent-grace"
    assert len(body["sip"]["password"]) >= 20
    grace = Browser(site.origin)
    try:
        assert (await grace.login("grace", body["one_time_password"])).status == 303
    finally:
        await grace.close()
    again = await admin.post_json("/api/admin/agents", {"login": "grace",
                                                        "display_name": "G"})
    assert again.status == 409 and (await again.json())["error"] == "login_taken"
    async with admin.http.get("/api/admin/audit") as response:
        events = (await response.json())["events"]
    [created_event] = [e for e in events if e["action"] == "agent_created"]
    assert created_event["actor"] == "ada" and created_event["subject"].startswith("agent:")
    assert "password" not in str(created_event["detail"])


@pytest.mark.parametrize("body", [
    {"login": "Robert'); DROP TABLE agents;--", "display_name": "x"},
    {"login": "r", "display_name": "too short a login"},
    {"login": "rob", "display_name": ""},
    {"login": "rob", "display_name": "Rob", "role": "root"},
])
async def test_bad_new_agents_are_refused_with_a_reason(
    site: ToolServed, browsers: Browsers, body: dict[str, str],
) -> None:
    admin = await signed_in(browsers, "ada")
    response = await admin.post_json("/api/admin/agents", body)
    assert response.status == 400 and (await response.json())["reason"]


async def test_admin_apis_are_for_admins_only(
    site: ToolServed, browsers: Browsers,
) -> None:
    supervisor = await signed_in(browsers, "sam")
    for method, path in (("GET", "/api/admin/assistants"), ("GET", "/api/admin/audit"),
                         ("POST", "/api/admin/agents"), ("POST", "/api/admin/test-call")):
        async with supervisor.http.request(method, path, json={},
                                           headers={"X-CSRF-Token": supervisor.csrf}) as r:
            assert r.status == 403, path
    assert site.test_calls == []


async def test_assistant_rules_are_validated_and_audited(
    site: ToolServed, browsers: Browsers,
) -> None:
    async with site.store.transaction() as tx:
        assistant = await tx.assistants.create(
            name="receptionist", numbers=["2000"], control_token_hash="x")
    admin = await signed_in(browsers, "ada")
    path = f"/api/admin/assistants/{assistant.id}"
    good = {"handoff_level": "quick", "accept_timeout_s": 20, "fallback_kind": "number",
            "fallback_number": "+33 1 23 45 67 89"}
    saved = await admin.post_json(path, good)
    assert saved.status == 200
    assert (await saved.json())["assistant"]["fallback_number"] == "+33123456789"
    for bad, error in (({"accept_timeout_s": 1}, "bad_request"),
                       ({"handoff_level": "eager"}, "bad_request"),
                       ({"fallback_number": "123&PJSIP/1@evil"}, "bad_number")):
        refused = await admin.post_json(path, {**good, **bad})
        assert refused.status == 400 and (await refused.json())["error"] == error
    missing = await admin.post_json("/api/admin/assistants/999", good)
    assert missing.status == 404
    async with admin.http.get("/api/admin/audit?limit=5") as response:
        [event] = [e for e in (await response.json())["events"]
                   if e["action"] == "assistant_changed"]
    assert event["detail"]["handoff_level"] == ["balanced", "quick"]
    async with admin.http.get("/api/admin/audit?limit=5000") as response:
        assert response.status == 400


async def test_place_a_test_call_asks_the_carrier_and_is_audited(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    placed = await admin.post_json("/api/admin/test-call", {})
    assert placed.status == 202 and (await placed.json()) == {"calling": "2000"}
    assert site.test_calls == ["2000"]
    async with admin.http.get("/admin") as response:
        page = await response.text()
    assert response.status == 200 and "Place a test call" in page
