"""The admin page's trunks: listed with their status (the settings file's read-only),
added, changed and removed by admins only, each change audited and sent to the PBX, and
a trunk's password never sent back."""

from __future__ import annotations

from typing import Any

import pytest

from pbx.trunk_status import TrunkState, TrunkStatus
from tests.dashboard_fixtures import Browser, Browsers, audit, signed_in
from tests.tools_fixtures import ToolServed

ACME = {"name": "acme", "host": "sip.acme.example", "auth": "register", "username": "4420",
        "password": "s3cret-pass", "caller_id": "+15550100", "codecs": "ulaw,alaw",
        "patterns": "_NXXNXXXXXX", "allow_international": False, "allow_premium": False}


async def listed(browser: Browser) -> dict[str, dict[str, Any]]:
    async with browser.http.get("/api/admin/trunks") as response:
        assert response.status == 200
        return {t["name"]: t for t in (await response.json())["trunks"]}


async def test_an_admin_adds_changes_and_removes_a_trunk_and_each_change_is_audited(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    added = await admin.post_json("/api/admin/trunks", ACME)
    assert added.status == 201 and (await added.json())["pbx_live"] is True
    site.trunk_statuses["acme"] = TrunkStatus(TrunkState.REJECTED, "refused (SIP 401)")
    trunks = await listed(admin)
    # The settings file's trunk first (calls out try it first), read-only.
    assert list(trunks) == ["carrier", "acme"]
    assert trunks["carrier"]["read_only"] and trunks["carrier"]["id"] is None
    acme = trunks["acme"]
    assert (acme["status"], acme["last_error"]) == ("rejected", "refused (SIP 401)")
    assert acme["password_set"] is True and "password" not in acme
    changed = await admin.post_json(f"/api/admin/trunks/{acme['id']}",
                                    {"allow_international": True, "password": ""})
    assert changed.status == 200
    assert (await listed(admin))["acme"]["allow_international"] is True
    removed = await admin.post_json(f"/api/admin/trunks/{acme['id']}/remove", {})
    assert removed.status == 200
    assert list(await listed(admin)) == ["carrier"]
    assert site.endpoint_reloads == ["reload"] * 3
    lines = await audit(admin)
    assert [(a, b, c) for a, b, c, _ in lines[:3]] == [
        ("ada", "trunk_removed", "trunk:acme"), ("ada", "trunk_changed", "trunk:acme"),
        ("ada", "trunk_added", "trunk:acme")]
    assert lines[1][3] == {"allow_international": [False, True]}  # the password was kept
    assert "s3cret" not in str(lines)


@pytest.mark.parametrize(("body", "refusal", "reason"), [
    ({**ACME, "password": ""}, (400, "bad_request"), "needs a username and a password"),
    ({**ACME, "patterns": "_X!"}, (400, "bad_request"), "not a strict number pattern"),
    ({**ACME, "name": "carrier"}, (409, "name_taken"), "a trunk of the settings file"),
    ({**ACME, "port": "five"}, (400, "bad_request"), "port: a number"),
])
async def test_a_bad_trunk_is_refused_with_a_reason(
    site: ToolServed, browsers: Browsers, body: dict[str, Any], refusal: tuple[int, str],
    reason: str,
) -> None:
    admin = await signed_in(browsers, "ada")
    response = await admin.post_json("/api/admin/trunks", body)
    answer = await response.json()
    assert (response.status, answer["error"]) == refusal
    assert reason in answer["reason"]
    assert list(await listed(admin)) == ["carrier"] and site.endpoint_reloads == []


async def test_trunks_are_for_admins_and_changes_need_the_csrf_token(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    assert (await admin.post_json("/api/admin/trunks", ACME, csrf="")).status == 403
    supervisor = await signed_in(browsers, "sam")
    async with supervisor.http.get("/api/admin/trunks") as response:
        assert response.status == 403
    assert (await supervisor.post_json("/api/admin/trunks", ACME)).status == 403
    missing = await admin.post_json("/api/admin/trunks/99", {"enabled": False})
    assert missing.status == 404 and "no stored trunk 99" in (await missing.json())["reason"]
    assert list(await listed(admin)) == ["carrier"]
