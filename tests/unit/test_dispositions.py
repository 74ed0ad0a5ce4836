"""Dispositions (issue 12 item 5): the admin's list, from the Admin API; an agent picks
one for a call they handled, kept on the call and audited; a queue that requires one
keeps its agent out of "available" until they pick; bad input refused with a reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from handoff.calls import CallOutcome
from handoff.handoffs import HandoffEvent
from handoff.store import Store, create_store_engine
from handoff.store.models import Handoff
from tests.dashboard_fixtures import Browser, Browsers, signed_in
from tests.tools_fixtures import ToolServed
from tests.unit.test_call_panel import connected_call
from web.cli import main


async def listed(browser: Browser) -> dict[str, int]:
    async with browser.http.get("/api/dispositions") as response:
        assert response.status == 200
        return {d["name"]: d["id"] for d in (await response.json())["dispositions"]}


async def added(admin: Browser, name: str) -> int:
    response = await admin.post_json("/api/admin/dispositions", {"name": name})
    assert response.status == 201
    return int((await response.json())["disposition"]["id"])


async def audit(browser: Browser, action: str) -> list[dict[str, Any]]:
    async with browser.http.get(f"/api/admin/audit?action={action}") as response:
        return list((await response.json())["events"])


async def test_an_admin_adds_and_removes_dispositions_and_agents_see_the_list(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    sale = await added(admin, "Sale")
    await added(admin, "Réclamation")
    alice = await signed_in(browsers, "alice")
    assert await listed(alice) == {"Réclamation": sale + 1, "Sale": sale}
    assert (await admin.post_json(f"/api/admin/dispositions/{sale}/remove", {})).status == 200
    assert list(await listed(alice)) == ["Réclamation"]
    [line] = await audit(admin, "disposition_removed")
    assert line["said"].endswith("removed disposition Sale")


@pytest.mark.parametrize(("body", "refusal", "reason"), [
    ({}, (400, "bad_request"), "a disposition's name is 1-40"),
    ({"name": "a\tb"}, (400, "bad_request"), "no control characters"),
    ({"name": "sale"}, (409, "name_taken"), "there is already a disposition 'Sale'"),
])
async def test_a_bad_disposition_is_refused_with_a_reason_and_nothing_is_written(
    site: ToolServed, browsers: Browsers, body: dict[str, Any], refusal: tuple[int, str],
    reason: str,
) -> None:
    admin = await signed_in(browsers, "ada")
    await added(admin, "Sale")
    response = await admin.post_json("/api/admin/dispositions", body)
    answer = await response.json()
    assert (response.status, answer["error"]) == refusal
    assert reason in answer["reason"]
    assert list(await listed(admin)) == ["Sale"]


async def test_dispositions_are_changed_by_admins_only_with_the_csrf_token(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    assert (await admin.post_json("/api/admin/dispositions", {"name": "Sale"},
                                  csrf="")).status == 403
    for login in ("sam", "alice"):
        other = await signed_in(browsers, login)
        assert (await other.post_json("/api/admin/dispositions",
                                      {"name": "Sale"})).status == 403
    missing = await admin.post_json("/api/admin/dispositions/42/remove", {})
    assert missing.status == 404 and "no disposition 42" in (await missing.json())["reason"]
    assert await listed(admin) == {}


async def test_an_agent_picks_a_disposition_for_a_call_they_handled_only(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    sale = await added(admin, "Sale")
    handoff = await connected_call(site, "alice")
    url = f"/api/calls/{handoff.call_id}/disposition"
    bob = await signed_in(browsers, "bob")
    assert (await bob.post_json(url, {"disposition_id": sale})).status == 404
    alice = await signed_in(browsers, "alice")
    for body, refusal in (({"disposition_id": "Sale"}, (400, "bad_request")),
                          ({"disposition_id": 99}, (404, "not_found"))):
        refused = await alice.post_json(url, body)
        assert (refused.status, (await refused.json())["error"]) == refusal
    assert (await alice.post_json(url, {"disposition_id": sale}, csrf="")).status == 403
    assert (await alice.post_json(url, {"disposition_id": sale})).status == 200
    async with site.store.transaction() as tx:
        assert (await tx.calls.get(handoff.call_id)).disposition_id == sale
    nowhere = await admin.post_json("/api/calls/00000000-0000-0000-0000-000000000000/"
                                    "disposition", {"disposition_id": sale})
    assert nowhere.status == 404
    [line] = await audit(admin, "disposition_set")
    assert (line["actor"], line["detail"]) == ("alice", {"disposition": "Sale"})
    assert line["said"].endswith("gave a call the disposition Sale")


async def test_a_queue_that_requires_a_disposition_keeps_its_agent_in_wrap_up_until_they_pick(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    sale = await added(admin, "Sale")
    created = await admin.post_json("/api/admin/queues", {
        "name": "sales", "members": "alice", "disposition_required": True})
    assert created.status == 201
    assert (await created.json())["queue"]["disposition_required"] is True
    refused = await admin.post_json("/api/admin/queues", {
        "name": "other", "disposition_required": "yes"})
    assert "disposition_required is true or false" in (await refused.json())["reason"]
    handoff = await connected_call(site, "alice")
    async with site.store.engine.begin() as connection:
        await connection.execute(update(Handoff).where(Handoff.id == handoff.id)
                                 .values(queue_id=(await created.json())["queue"]["id"]))
    alice = await signed_in(browsers, "alice")
    # On the call she owes nothing yet; the call over, she owes its disposition.
    assert (await alice.post_json("/api/presence", {"presence": "wrap_up"})).status == 200
    async with site.store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.END)
    held = await alice.post_json("/api/presence", {"presence": "available"})
    assert (held.status, (await held.json())["error"]) == (409, "disposition_needed")
    assert (await alice.post_json(f"/api/calls/{handoff.call_id}/disposition",
                                  {"disposition_id": sale})).status == 200
    freed = await alice.post_json("/api/presence", {"presence": "available"})
    assert freed.status == 200 and (await freed.json())["me"]["presence"] == "available"


async def test_a_calls_disposition_shows_in_the_history_and_on_its_callers_page(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    sale = await added(admin, "Sale")
    handoff = await connected_call(site, "alice")
    async with site.store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.END)
        call = await tx.calls.close(handoff.call_id, CallOutcome.COMPLETED_BY_AGENT,
                                    end_cause="16")
    alice = await signed_in(browsers, "alice")

    async def in_history() -> Any:
        async with alice.http.get("/api/history") as response:
            (row,) = (await response.json())["calls"]
        return row["disposition"]

    assert await in_history() is None  # not picked yet
    assert (await alice.post_json(f"/api/calls/{handoff.call_id}/disposition",
                                  {"disposition_id": sale})).status == 200
    assert await in_history() == "Sale"
    for page in ("/history", f"/contacts/{call.caller_number}"):
        async with admin.http.get(page) as response:
            assert response.status == 200
            assert 'class="disposition">Sale<' in await response.text()


def test_dispositions_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_DEMO__ENABLED", "false")
    assert main(["disposition", "add", "Sale"]) == 0
    assert main(["disposition", "add", "Réclamation"]) == 0
    capsys.readouterr()
    assert main(["disposition", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Réclamation", "Sale"]
    assert main(["disposition", "add", "sale"]) == 2
    assert "already a disposition 'Sale'" in capsys.readouterr().err
    assert main(["disposition", "add", "a\tb"]) == 2
    assert main(["disposition", "remove", "Nothing"]) == 2
    assert "no disposition 'Nothing'" in capsys.readouterr().err
    assert main(["disposition", "remove", "Sale"]) == 0
    capsys.readouterr()
    assert main(["disposition", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Réclamation"]

    async def audited() -> list[tuple[str, str, str]]:
        engine = create_store_engine(f"sqlite:///{tmp_path / 'switchboard.db'}")
        try:
            async with Store(engine).transaction() as tx:
                return [(e.actor, e.action, e.subject) for e in await tx.audit.recent(100)
                        if e.action.startswith("disposition")]
        finally:
            await engine.dispose()

    assert asyncio.run(audited()) == [
        ("cli", "disposition_removed", "disposition:Sale"),
        ("cli", "disposition_added", "disposition:Réclamation"),
        ("cli", "disposition_added", "disposition:Sale")]
