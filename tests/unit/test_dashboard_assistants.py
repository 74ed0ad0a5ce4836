"""The admin page's assistants: create with numbers and an engine (the token shown once),
edit, rotate the token, disable, enable, remove; the PBX is asked to reload each time;
refusals say why; only admins, and only with the session's CSRF token."""

from __future__ import annotations

from typing import Any

from tests.dashboard_fixtures import Browser, Browsers, signed_in
from tests.tools_fixtures import ToolServed
from web.ai_api import hash_control_token


async def _audit(admin: Browser) -> list[tuple[str, str, dict[str, Any]]]:
    async with admin.http.get("/api/admin/audit") as response:
        return [(e["actor"], e["action"], e["detail"]) for e in (await response.json())["events"]]


async def _stored_hash(site: ToolServed, name: str) -> str:
    async with site.store.transaction() as tx:
        assistant = await tx.assistants.by_name(name)
    assert assistant is not None
    return assistant.control_token_hash


async def test_an_admin_creates_an_assistant_and_sees_its_token_once(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    made = await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100", "_21XX"], "engine": "127.0.0.1:9092"})
    assert made.status == 201
    body = await made.json()
    assert body["assistant"]["numbers"] == ["2100", "_21XX"]
    assert body["assistant"]["engine"] == "127.0.0.1:9092" and body["live"] is True
    # Only the hash is kept, and the list never shows a token.
    assert await _stored_hash(site, "sales") == hash_control_token(body["token"])
    async with admin.http.get("/api/admin/assistants") as listing:
        rows = (await listing.json())["assistants"]
    assert [r["name"] for r in rows] == ["sales"] and "token" not in rows[0]
    assert site.endpoint_reloads == ["reload"]
    assert ("ada", "assistant_created",
            {"name": "sales", "numbers": ["2100", "_21XX"], "engine": "127.0.0.1:9092"}
            ) in await _audit(admin)
    # On the built-in engine nobody is shown a token: the receptionist holds its own.
    builtin = await admin.post_json("/api/admin/assistants", {
        "name": "desk", "numbers": ["2200"], "engine": "builtin"})
    assert builtin.status == 201 and "token" not in await builtin.json()


async def test_editing_numbers_and_engine_applies_at_once_and_is_audited(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    made = await (await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100"], "engine": "127.0.0.1:9092"})).json()
    path = f"/api/admin/assistants/{made['assistant']['id']}"
    edited = await admin.post_json(path, {"numbers": ["2101", "2102"],
                                          "engine": "127.0.0.1:9093"})
    assert edited.status == 200
    body = await edited.json()
    assert body["assistant"]["numbers"] == ["2101", "2102"]
    assert body["assistant"]["engine"] == "127.0.0.1:9093"
    # Re-pointed at another address, the engine keeps its token.
    assert "token" not in body
    assert await _stored_hash(site, "sales") == hash_control_token(made["token"])
    # Moved to the built-in receptionist, the external engine's token is cut off.
    await admin.post_json(path, {"engine": "builtin"})
    assert await _stored_hash(site, "sales") != hash_control_token(made["token"])
    # ...and back to an engine of ours: a new token, shown once.
    back = await (await admin.post_json(path, {"engine": "127.0.0.1:9094"})).json()
    assert await _stored_hash(site, "sales") == hash_control_token(back["token"])
    assert site.endpoint_reloads == ["reload"] * 4
    changes = [d for _, action, d in await _audit(admin) if action == "assistant_changed"]
    assert {"numbers": [["2100"], ["2101", "2102"]],
            "engine": ["127.0.0.1:9092", "127.0.0.1:9093"]} in changes


async def test_a_rotated_token_replaces_the_old_one(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    made = await (await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100"], "engine": "127.0.0.1:9092"})).json()
    rotated = await admin.post_json(f"/api/admin/assistants/{made['assistant']['id']}/token", {})
    assert rotated.status == 200
    token = (await rotated.json())["token"]
    assert token != made["token"]
    assert await _stored_hash(site, "sales") == hash_control_token(token)
    assert ("ada", "assistant_token_rotated", {"name": "sales"}) in await _audit(admin)
    builtin = await (await admin.post_json("/api/admin/assistants", {
        "name": "desk", "numbers": [], "engine": "builtin"})).json()
    refused = await admin.post_json(f"/api/admin/assistants/{builtin['assistant']['id']}/token",
                                    {})
    assert refused.status == 409 and (await refused.json())["error"] == "builtin_token"


async def test_bad_input_is_refused_with_a_reason_and_changes_nothing(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    good = {"name": "sales", "numbers": ["2100"], "engine": "127.0.0.1:9092"}
    assert (await admin.post_json("/api/admin/assistants", good)).status == 201
    for bad, status, error in (
        ({"name": "bad name"}, 400, "bad_request"),
        ({"name": "other", "numbers": ["_X."]}, 400, "bad_number"),
        ({"name": "other", "numbers": ["2000&PJSIP/x@evil"]}, 400, "bad_number"),
        ({"name": "other", "numbers": "2100"}, 400, "bad_request"),
        ({"name": "other", "engine": "nowhere"}, 400, "bad_engine"),
        ({"name": "other", "engine": "127.0.0.1:99999"}, 400, "bad_engine"),
        ({"name": "other", "accept_timeout_s": 1}, 400, "bad_request"),
        ({"name": "sales", "numbers": ["2200"]}, 409, "name_taken"),
        ({"name": "other", "numbers": ["2100"]}, 409, "number_taken"),
    ):
        refused = await admin.post_json("/api/admin/assistants", {**good, **bad})
        reply = await refused.json()
        assert (refused.status, reply["error"]) == (status, error), reply
        assert reply["reason"]
    async with site.store.transaction() as tx:
        assert [a.name for a in await tx.assistants.listed()] == ["sales"]
    missing = await admin.post_json("/api/admin/assistants/999", {"numbers": ["2300"]})
    assert missing.status == 404
    assert site.endpoint_reloads == ["reload"]


async def test_disable_enable_remove_keep_the_row_and_free_the_numbers(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    made = await (await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100"], "engine": "127.0.0.1:9092"})).json()
    path = f"/api/admin/assistants/{made['assistant']['id']}"
    disabled = await (await admin.post_json(f"{path}/disable", {})).json()
    assert disabled["assistant"]["enabled"] is False
    assert (await (await admin.post_json(f"{path}/enable", {})).json())["assistant"]["enabled"]
    removed = await admin.post_json(f"{path}/remove", {})
    assert removed.status == 200 and (await removed.json())["assistant"]["removed"] is True
    again = await admin.post_json(f"{path}/enable", {})
    assert again.status == 409 and "removed" in (await again.json())["reason"]
    async with admin.http.get("/api/admin/assistants") as listing:
        assert (await listing.json())["assistants"] == []
    # Its number is free for another assistant; its name stays taken (the history).
    other = await admin.post_json("/api/admin/assistants", {
        "name": "sales2", "numbers": ["2100"], "engine": "builtin"})
    assert other.status == 201
    actions = [action for _, action, _ in await _audit(admin)]
    assert {"assistant_disabled", "assistant_enabled", "assistant_removed"} <= set(actions)


async def test_assistants_are_for_admins_with_the_sessions_csrf_token(
    site: ToolServed, browsers: Browsers,
) -> None:
    supervisor = await signed_in(browsers, "sam")
    body = {"name": "sales", "numbers": ["2100"], "engine": "builtin"}
    assert (await supervisor.post_json("/api/admin/assistants", body)).status == 403
    async with supervisor.http.get("/api/admin/assistants") as listing:
        assert listing.status == 403
    admin = await signed_in(browsers, "ada")
    forged = await admin.post_json("/api/admin/assistants", body, csrf="forged")
    assert forged.status == 403
    async with site.store.transaction() as tx:
        assert await tx.assistants.listed() == []


async def test_an_admin_sets_restricted_topics_and_the_audit_log_keeps_the_rule(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    made = await (await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100"], "engine": "builtin",
        "restricted_topics": [{"name": "billing", "phrases": ["billing dispute"]}]})).json()
    assert made["assistant"]["restricted_topics"] == [
        {"name": "billing", "phrases": ["billing dispute"]}]
    path = f"/api/admin/assistants/{made['assistant']['id']}"
    # The page sends the lines as written (NAME=phrase, phrase), as the command line does.
    edited = await admin.post_json(path, {"restricted_topics": [
        "billing=billing dispute, refund", "plainte=réclamation"]})
    assert edited.status == 200
    after = [{"name": "billing", "phrases": ["billing dispute", "refund"]},
             {"name": "plainte", "phrases": ["réclamation"]}]
    assert (await edited.json())["assistant"]["restricted_topics"] == after
    assert ("ada", "assistant_changed", {"restricted_topics": [
        [{"name": "billing", "phrases": ["billing dispute"]}], after]}) in await _audit(admin)
    # A bad topic is refused with the reason, and nothing changes.
    refused = await admin.post_json(path, {"restricted_topics": ["Billing=refund"]})
    assert refused.status == 400
    assert (await refused.json())["error"] == "bad_topic"
    async with site.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None and sales.restricted_topics == after


async def test_an_admin_sets_business_hours_and_the_audit_log_keeps_them(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    made = await (await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100"], "engine": "builtin",
        "hours": ["mon-fri 09:00-17:00"]})).json()
    assert (made["assistant"]["hours"], made["assistant"]["holidays"]) == (
        ["mon-fri 09:00-17:00"], [])
    path = f"/api/admin/assistants/{made['assistant']['id']}"
    edited = await admin.post_json(path, {"holidays": ["2026-12-25"]})
    assert edited.status == 200
    assert (await edited.json())["assistant"]["hours"] == ["mon-fri 09:00-17:00"]
    assert ("ada", "assistant_changed", {"holidays": [[], ["2026-12-25"]]}) in \
        await _audit(admin)
    # Hours that cannot be read are refused with the reason, and nothing changes.
    refused = await admin.post_json(path, {"hours": ["mon 17:00-09:00"]})
    assert refused.status == 400
    assert (await refused.json())["error"] == "bad_hours"
    async with site.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None and sales.hours == ["mon-fri 09:00-17:00"]


async def test_an_admin_sets_a_dtmf_menu_and_the_audit_log_keeps_it(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100"], "engine": "builtin"})
    made = await (await admin.post_json("/api/admin/assistants", {
        "name": "front", "numbers": ["2000"], "engine": "builtin"})).json()
    path = f"/api/admin/assistants/{made['assistant']['id']}"
    edited = await admin.post_json(path, {"menu_prompt": "Press 1 for sales.",
                                          "menu": ["1 = assistant:sales"]})
    assert edited.status == 200
    shown = (await edited.json())["assistant"]
    assert (shown["menu_prompt"], shown["menu"]) == ("Press 1 for sales.", ["1=assistant:sales"])
    assert ("ada", "assistant_changed", {"menu": [
        {}, {"prompt": "Press 1 for sales.", "options": ["1=assistant:sales"]}]}) in \
        await _audit(admin)
    # A key that leads nowhere is refused with the reason, and nothing changes.
    refused = await admin.post_json(path, {"menu": ["2=assistant:nobody"]})
    assert refused.status == 400
    assert (await refused.json())["error"] == "bad_menu"
    async with site.store.transaction() as tx:
        front = await tx.assistants.by_name("front")
    assert front is not None and front.menu["options"] == ["1=assistant:sales"]


async def test_an_admin_sets_announcements_and_the_audit_log_keeps_them(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    made = await (await admin.post_json("/api/admin/assistants", {
        "name": "sales", "numbers": ["2100"], "engine": "builtin"})).json()
    path = f"/api/admin/assistants/{made['assistant']['id']}"
    edited = await admin.post_json(path, {"announcements": ["takeover=A supervisor joins."]})
    assert edited.status == 200
    assert (await edited.json())["assistant"]["announcements"] == {
        "takeover": "A supervisor joins."}
    assert ("ada", "assistant_changed", {"announcements": [
        {}, {"takeover": "A supervisor joins."}]}) in await _audit(admin)
    refused = await admin.post_json(path, {"announcements": {"hold": "music"}})
    assert refused.status == 400
    assert (await refused.json())["error"] == "bad_announcement"
    async with site.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
    assert sales is not None and sales.announcements == {"takeover": "A supervisor joins."}
