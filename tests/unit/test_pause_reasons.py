"""Pause reasons (issue 12 item 5): the admin's list, productive or not, from the Admin
API and `switchboard pause-reason`; an agent away with a reason, since when, audited and
counted by reason; bad input refused with a reason and nothing written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from handoff.agents import Presence, PresenceEvent
from handoff.events import AGENTS_TOPIC, AgentChanged, EventHub
from handoff.metrics import SwitchboardMetrics
from handoff.store import Store, create_store_engine
from tests.dashboard_fixtures import Browser, Browsers, audit, signed_in
from tests.store_fixtures import FakeClock
from tests.tools_fixtures import ToolServed
from tests.unit.test_store import new_agents
from web.cli import main

# ---- the store -------------------------------------------------------------------------


async def test_an_agent_away_for_a_reason_keeps_it_until_they_choose_again(
    store: Store, clock: FakeClock,
) -> None:
    [agent] = await new_agents(store, 1)
    async with store.transaction() as tx:
        lunch = await tx.pause_reasons.add("Lunch", productive=False)
        training = await tx.pause_reasons.add("Training", productive=True)
    clock.advance(60)
    async with store.transaction() as tx:
        away = await tx.agents.set_presence(agent.id, Presence.AWAY, actor="agent0",
                                            pause_reason=lunch)
    assert (away.presence, away.pause_reason_id, away.presence_since) == (
        Presence.AWAY, lunch.id, clock.now)
    lunch_began = clock.now
    clock.advance(30)
    async with store.transaction() as tx:
        # A second tab going on duty changes nothing: the pause goes on.
        again = await tx.agents.set_duty(agent.id, True, actor="agent0")
    assert (again.pause_reason_id, again.presence_since) == (lunch.id, lunch_began)
    async with store.transaction() as tx:
        # Another reason while away is a new pause, with its own start.
        other = await tx.agents.set_presence(agent.id, Presence.AWAY, actor="agent0",
                                             pause_reason=training)
    assert (other.pause_reason_id, other.presence_since) == (training.id, clock.now)
    async with store.transaction() as tx:
        back = await tx.agents.set_presence(agent.id, Presence.AVAILABLE, actor="agent0")
        lines = await tx.audit.recent(10)
    assert (back.presence, back.pause_reason_id) == (Presence.AVAILABLE, None)
    presence = [e.detail for e in lines if e.action == "presence_change"]
    assert [(d["presence"], d.get("pause_reason"), d.get("productive"))
            for d in reversed(presence)] == [
        ("away", "Lunch", False), ("away", "Training", True), ("available", None, None)]


async def test_every_state_change_is_a_row_with_its_pause_reason_for_the_floor_figures(
    store: Store, clock: FakeClock,
) -> None:
    [agent] = await new_agents(store, 1)  # on duty: one row, "available"
    async with store.transaction() as tx:
        lunch = await tx.pause_reasons.add("Lunch", productive=False)
    clock.advance(60)
    async with store.transaction() as tx:
        await tx.agents.set_presence(agent.id, Presence.AWAY, actor="agent0",
                                     pause_reason=lunch)
        # Nothing changes: no row (a second tab going on duty while away).
        await tx.agents.set_duty(agent.id, True, actor="agent0")
    lunch_began = clock.now
    clock.advance(30)
    async with store.transaction() as tx:
        await tx.agents.set_presence(agent.id, Presence.AWAY, actor="agent0")
        await tx.agents.change_presence(agent.id, PresenceEvent.CHOOSE_AVAILABLE,
                                        actor="agent0")
        await tx.agents.change_presence(agent.id, PresenceEvent.WRAP_UP_BEGINS,
                                        actor="controller")
        await tx.agents.set_duty(agent.id, False, actor="agent0")
        rows = await tx.agents.state_changes(agent.id)
    assert [(r.state, r.pause_reason_id) for r in rows] == [
        ("available", None), ("away", lunch.id), ("away", None), ("available", None),
        ("wrap_up", None), ("off_duty", None)]
    # The lunch lasted from its row to the next: the figures need no audit line.
    assert (rows[1].at, rows[2].at) == (lunch_began, clock.now)


async def test_a_pause_reason_goes_with_choosing_away_only(store: Store) -> None:
    [agent] = await new_agents(store, 1)
    async with store.transaction() as tx:
        lunch = await tx.pause_reasons.add("Lunch", productive=False)
    with pytest.raises(ValueError, match="choose_away"):
        async with store.transaction() as tx:
            await tx.agents.change_presence(agent.id, PresenceEvent.CHOOSE_AVAILABLE,
                                            actor="agent0", pause_reason=lunch)


async def test_agents_away_are_counted_by_reason(store: Store) -> None:
    first, second, third = await new_agents(store, 3)
    async with store.transaction() as tx:
        lunch = await tx.pause_reasons.add("Lunch", productive=False)
        await tx.pause_reasons.add("Training", productive=True)
        await tx.agents.set_presence(first.id, Presence.AWAY, pause_reason=lunch)
        await tx.agents.set_presence(second.id, Presence.AWAY, pause_reason=lunch)
        await tx.agents.set_presence(third.id, Presence.AWAY)
    events = EventHub()
    registry = CollectorRegistry()
    ready = asyncio.Event()
    task = asyncio.create_task(SwitchboardMetrics(registry, events, store).run(ready))

    def paused(reason: str, productive: str) -> float | None:
        return registry.get_sample_value("switchboard_agents_paused",
                                         {"reason": reason, "productive": productive})

    try:
        await ready.wait()
        assert (paused("Lunch", "false"), paused("Training", "true"), paused("", "false")) \
            == (2, 0, 1)
        async with store.transaction() as tx:
            await tx.agents.set_presence(first.id, Presence.AVAILABLE)
        events.publish(AGENTS_TOPIC, AgentChanged(first.id))
        for _ in range(500):
            if paused("Lunch", "false") == 1:
                break
            await asyncio.sleep(0.01)
        assert paused("Lunch", "false") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- the Admin API and the desk ----------------------------------------------------------


async def listed(browser: Browser) -> dict[str, bool]:
    async with browser.http.get("/api/admin/pause-reasons") as response:
        assert response.status == 200
        return {r["name"]: r["productive"] for r in (await response.json())["pause_reasons"]}


async def test_an_admin_adds_and_removes_pause_reasons_and_each_change_is_audited(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    added = await admin.post_json("/api/admin/pause-reasons",
                                  {"name": " Formation ", "productive": True})
    assert added.status == 201
    formation = (await added.json())["pause_reason"]
    assert (await admin.post_json("/api/admin/pause-reasons",
                                  {"name": "Déjeuner", "productive": False})).status == 201
    assert await listed(admin) == {"Déjeuner": False, "Formation": True}
    removed = await admin.post_json(f"/api/admin/pause-reasons/{formation['id']}/remove", {})
    assert removed.status == 200 and await listed(admin) == {"Déjeuner": False}
    lines = await audit(admin)
    assert [line[:3] for line in lines[:3]] == [
        ("ada", "pause_reason_removed", "pause_reason:Formation"),
        ("ada", "pause_reason_added", "pause_reason:Déjeuner"),
        ("ada", "pause_reason_added", "pause_reason:Formation")]
    async with admin.http.get("/api/admin/audit") as response:
        sentences = [e["said"] for e in (await response.json())["events"]][:3]
    assert sentences[2].endswith("added pause reason Formation (productive)")


@pytest.mark.parametrize(("body", "refusal", "reason"), [
    ({"name": "Lunch"}, (400, "bad_request"), "productive is true"),
    ({"name": "Lunch", "productive": "yes"}, (400, "bad_request"), "productive is true"),
    ({"name": "  ", "productive": False}, (400, "bad_request"), "a pause reason's name"),
    ({"name": "x" * 41, "productive": False}, (400, "bad_request"), "1-40 characters"),
    ({"name": "Lunch\nbreak", "productive": False}, (400, "bad_request"), "control"),
    ({"name": "BREAK", "productive": True}, (409, "name_taken"), "'Break'"),
])
async def test_a_bad_pause_reason_is_refused_with_a_reason_and_nothing_is_written(
    site: ToolServed, browsers: Browsers, body: dict[str, Any], refusal: tuple[int, str],
    reason: str,
) -> None:
    admin = await signed_in(browsers, "ada")
    assert (await admin.post_json("/api/admin/pause-reasons",
                                  {"name": "Break", "productive": False})).status == 201
    response = await admin.post_json("/api/admin/pause-reasons", body)
    answer = await response.json()
    assert (response.status, answer["error"]) == refusal
    assert reason in answer["reason"]
    assert await listed(admin) == {"Break": False}


async def test_pause_reasons_are_for_admins_and_changes_need_the_csrf_token(
    site: ToolServed, browsers: Browsers,
) -> None:
    lunch = {"name": "Lunch", "productive": False}
    admin = await signed_in(browsers, "ada")
    assert (await admin.post_json("/api/admin/pause-reasons", lunch, csrf="")).status == 403
    for login in ("sam", "alice"):
        other = await signed_in(browsers, login)
        async with other.http.get("/api/admin/pause-reasons") as response:
            assert response.status == 403
        assert (await other.post_json("/api/admin/pause-reasons", lunch)).status == 403
    missing = await admin.post_json("/api/admin/pause-reasons/99/remove", {})
    assert missing.status == 404 and "no pause reason 99" in (await missing.json())["reason"]
    assert await listed(admin) == {}


async def test_an_agent_chooses_away_with_a_reason_and_the_board_shows_it(
    site: ToolServed, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    lunch = (await (await admin.post_json(
        "/api/admin/pause-reasons", {"name": "Lunch", "productive": False})).json())
    lunch_id = lunch["pause_reason"]["id"]
    gone = (await (await admin.post_json(
        "/api/admin/pause-reasons", {"name": "Old", "productive": True})).json())
    await admin.post_json(f"/api/admin/pause-reasons/{gone['pause_reason']['id']}/remove", {})
    alice = await signed_in(browsers, "alice")
    assert (await alice.post_json("/api/duty", {"on_duty": True})).status == 200
    for body, refusal in (
            ({"presence": "available", "pause_reason_id": lunch_id}, (400, "bad_request")),
            ({"presence": "away", "pause_reason_id": "Lunch"}, (400, "bad_request")),
            ({"presence": "away", "pause_reason_id": 99}, (404, "not_found")),
            ({"presence": "away", "pause_reason_id": gone["pause_reason"]["id"]},
             (404, "not_found"))):
        refused = await alice.post_json("/api/presence", body)
        assert (refused.status, (await refused.json())["error"]) == refusal, body
    chosen = await alice.post_json("/api/presence",
                                   {"presence": "away", "pause_reason_id": lunch_id})
    assert chosen.status == 200
    me = (await chosen.json())["me"]
    assert (me["state"], me["pause_reason"], me["pause_productive"]) == (
        "away", "Lunch", False)
    assert me["presence_since"]
    async with alice.http.get("/") as desk:
        assert f'value="away:{lunch_id}"' in await desk.text()
    async with admin.http.get("/admin") as page:
        assert 'data-reason="Lunch"' in await page.text()
    async with admin.http.get("/api/admin/audit?action=presence_change") as response:
        [line] = (await response.json())["events"]
    assert (line["detail"]["pause_reason"], line["detail"]["productive"]) == ("Lunch", False)
    assert line["said"].endswith("chose away: Lunch (not productive)")


# ---- the command line ----------------------------------------------------------------------


def _read(url: str) -> tuple[dict[str, bool], list[tuple[str, str, str]]]:
    async def read() -> tuple[dict[str, bool], list[tuple[str, str, str]]]:
        engine = create_store_engine(url)
        try:
            async with Store(engine).transaction() as tx:
                rows = {r.name: r.productive for r in await tx.pause_reasons.listed()}
                lines = [(e.actor, e.action, e.subject) for e in await tx.audit.recent(100)]
            return rows, lines
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_pause_reasons_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_DEMO__ENABLED", "false")
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    assert main(["pause-reason", "add", "Training", "--productive"]) == 0
    assert main(["pause-reason", "add", "Lunch", "--not-productive"]) == 0
    capsys.readouterr()
    assert main(["pause-reason", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Lunch\tnot productive", "Training\tproductive"]
    assert main(["pause-reason", "add", "lunch", "--productive"]) == 2
    assert "already a pause reason 'Lunch'" in capsys.readouterr().err
    assert main(["pause-reason", "remove", "Nap"]) == 2
    assert main(["pause-reason", "remove", "Lunch"]) == 0
    rows, lines = _read(url)
    assert rows == {"Training": True}
    assert [line for line in lines if line[1].startswith("pause_reason")] == [
        ("cli", "pause_reason_removed", "pause_reason:Lunch"),
        ("cli", "pause_reason_added", "pause_reason:Lunch"),
        ("cli", "pause_reason_added", "pause_reason:Training")]
