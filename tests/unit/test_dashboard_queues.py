"""The admin page's queues and `switchboard queue`: added, changed and removed by admins
only (with the CSRF token), bad input refused with a reason and nothing written, each
change audited with what it was before and after; a transfer to a queue from the panel."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from handoff.assistants import EngineKind
from tests.dashboard_fixtures import Browser, Browsers, audit, signed_in
from tests.tools_fixtures import ToolServed
from tests.unit.test_call_panel import connected_call

SALES = {"name": "sales", "strategy": "skills_weighted", "members": "alice:5 bob",
         "assistants": "receptionist", "topics": "billing", "ring_s": 10}


@pytest.fixture(autouse=True)
async def receptionist(site: ToolServed) -> None:
    # The assistant SALES names, so a queue can take its cards.
    async with site.store.transaction() as tx:
        await tx.assistants.create(
            name="receptionist", numbers=["2000"], engine=EngineKind.BUILTIN,
            control_token_hash=hashlib.sha256(b"t").hexdigest())


async def listed(browser: Browser) -> dict[str, dict[str, Any]]:
    async with browser.http.get("/api/admin/queues") as response:
        assert response.status == 200
        return {q["name"]: q for q in (await response.json())["queues"]}


async def test_an_admin_adds_changes_and_removes_a_queue_and_each_change_is_audited(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    added = await admin.post_json("/api/admin/queues", SALES)
    assert added.status == 201
    sales = (await listed(admin))["sales"]
    assert (sales["strategy"], sales["ring_s"], sales["max_wait_s"]) == (
        "skills_weighted", 10, 120)
    assert sales["members"] == [{"login": "alice", "level": 5}, {"login": "bob", "level": 3}]
    assert (sales["assistants"], sales["topics"]) == (["receptionist"], ["billing"])
    assert sales["stats"]["entered"] == 0 and sales["stats"]["service_level"] is None
    assert sales["wrap_up_s"] is None  # the site's setting
    changed = await admin.post_json(f"/api/admin/queues/{sales['id']}",
                                    {"strategy": "round_robin", "members": "bob:2 alice:4"})
    assert changed.status == 200
    timed = await admin.post_json(f"/api/admin/queues/{sales['id']}", {"wrap_up_s": 30})
    assert timed.status == 200 and (await listed(admin))["sales"]["wrap_up_s"] == 30
    back = await admin.post_json(f"/api/admin/queues/{sales['id']}", {"wrap_up_s": ""})
    assert back.status == 200 and (await listed(admin))["sales"]["wrap_up_s"] is None
    assert (await listed(admin))["sales"]["members"] == [
        {"login": "bob", "level": 2}, {"login": "alice", "level": 4}]
    removed = await admin.post_json(f"/api/admin/queues/{sales['id']}/remove", {})
    assert removed.status == 200 and await listed(admin) == {}
    async with site.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
    assert receptionist is not None and receptionist.queue_id is None  # back to everyone
    lines = await audit(admin)
    assert [(a, b, c) for a, b, c, _ in lines[:5]] == [
        ("ada", "queue_removed", "queue:sales"), ("ada", "queue_changed", "queue:sales"),
        ("ada", "queue_changed", "queue:sales"), ("ada", "queue_changed", "queue:sales"),
        ("ada", "queue_added", "queue:sales")]
    assert lines[1][3] == {"wrap_up_s": [30, None]}
    assert lines[3][3] == {"strategy": ["skills_weighted", "round_robin"],
                           "members": [["alice:5", "bob:3"], ["bob:2", "alice:4"]]}


@pytest.mark.parametrize(("body", "refusal", "reason"), [
    ({**SALES, "strategy": "random"}, (400, "bad_request"), "strategy is one of"),
    ({**SALES, "members": "alice:9"}, (400, "bad_member"), "a level is 1 to 5"),
    ({**SALES, "members": "zed:3"}, (400, "bad_member"), "no person 'zed'"),
    ({**SALES, "members": "bob bob:2"}, (400, "bad_member"), "listed twice"),
    ({**SALES, "assistants": "nobody"}, (400, "bad_assistant"), "no assistant 'nobody'"),
    ({**SALES, "ring_s": 0}, (400, "bad_request"), "ring_s: a whole number, 1 to 600"),
    ({**SALES, "wrap_up_s": -1}, (400, "bad_request"), "wrap_up_s: a whole number of seconds"),
    ({**SALES, "topics": "Billing!"}, (400, "bad_topic"), "a topic name is"),
    ({**SALES, "name": "Sales Team"}, (400, "bad_request"), "a queue's name is"),
    ({**SALES, "colour": "red"}, (400, "bad_request"), "unknown field(s) colour"),
])
async def test_a_bad_queue_is_refused_with_a_reason_and_nothing_is_written(
    site: ToolServed, browsers: Browsers, body: dict[str, Any], refusal: tuple[int, str],
    reason: str,
) -> None:
    admin = await signed_in(browsers, "ada")
    response = await admin.post_json("/api/admin/queues", body)
    answer = await response.json()
    assert (response.status, answer["error"]) == refusal
    assert reason in answer["reason"]
    assert await listed(admin) == {}


async def test_two_queues_cannot_share_an_assistant_or_a_topic(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    assert (await admin.post_json("/api/admin/queues", SALES)).status == 201
    for clash, error in (({"assistants": "receptionist"}, "assistant_taken"),
                         ({"topics": "billing"}, "topic_taken")):
        response = await admin.post_json("/api/admin/queues", {"name": "other", **clash})
        assert (response.status, (await response.json())["error"]) == (409, error)
    assert list(await listed(admin)) == ["sales"]


async def test_queues_are_for_admins_and_changes_need_the_csrf_token(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    assert (await admin.post_json("/api/admin/queues", SALES, csrf="")).status == 403
    supervisor = await signed_in(browsers, "sam")
    async with supervisor.http.get("/api/admin/queues") as response:
        assert response.status == 403
    assert (await supervisor.post_json("/api/admin/queues", SALES)).status == 403
    missing = await admin.post_json("/api/admin/queues/99", {"ring_s": 5})
    assert missing.status == 404 and "no queue 99" in (await missing.json())["reason"]
    assert await listed(admin) == {}


async def test_the_agent_on_a_call_transfers_it_to_a_queue_from_the_panel(
    site: ToolServed, browsers: Browsers,
) -> None:
    handoff = await connected_call(site, "alice")
    alice = await signed_in(browsers, "alice")
    base = f"/api/calls/{handoff.call_id}/transfer"
    for body in ({"to_agent_id": 2, "to_queue_id": 1}, {}, {"to_queue_id": "sales"}):
        refused = await alice.post_json(base, body)
        assert refused.status == 400 and "to_queue_id" in (await refused.json())["reason"]
    assert (await alice.post_json(base, {"to_queue_id": 7, "note": "VIP"})).status == 200
    assert site.commands.panel == [
        ("transfer_to_queue", handoff.call_id, site.people["alice"].id, 7, "VIP")]
    lines = await audit(await signed_in(browsers, "ada"))
    [(_, _, subject, detail)] = [line for line in lines if line[:2] == ("alice", "transfer")]
    assert (subject, detail["to_queue"]) == (f"call:{handoff.call_id}", 7)
