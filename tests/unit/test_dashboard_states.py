"""States people can trust, on the server's side: an agent on a call is on a call in the
snapshot, the admin's API and the metrics; a timed wrap-up says when it ends; someone
who takes no calls has no duty; the audit log is filtered on the server."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from handoff.agents import CONTROLLER, PresenceEvent
from handoff.events import AGENTS_TOPIC, CARDS_TOPIC, AgentChanged, EventHub, Taken
from handoff.metrics import SwitchboardMetrics
from handoff.store.transitions import utc_now
from tests.dashboard_fixtures import Browsers, Served, offer_card, on_duty, open_store, signed_in
from tests.waiting import until
from web.dashboard import DASHBOARD


async def snapshot_of(browser: Any, served: Served) -> dict[str, Any]:
    async with browser.http.ws_connect("/ws", headers={"Origin": served.origin}) as ws:
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.TEXT
        return dict(json.loads(message.data))


async def test_an_agent_who_took_a_card_is_on_a_call_for_supervisors_and_admins(
    served: Served, browsers: Browsers,
) -> None:
    alice = await signed_in(browsers, "alice")
    await on_duty(alice)
    handoff = await offer_card(served.store, served.events)
    assert (await alice.post_json(f"/api/handoffs/{handoff.id}/accept", {})).status == 200
    served.events.publish(CARDS_TOPIC, Taken(handoff.id, served.people["alice"].id))
    admin = await signed_in(browsers, "ada")

    async def alice_seen() -> dict[str, Any]:
        snapshot = await snapshot_of(admin, served)
        return next(a for a in snapshot["agents"] if a["login"] == "alice")

    # Her presence still says available (what she comes back to); her state says the call.
    await until(lambda: _state_is(alice_seen, "on_call"), 5)
    seen = await alice_seen()
    assert (seen["presence"], seen["busy"], seen["state"]) == ("available", True, "on_call")
    async with admin.http.get("/admin") as page:
        html = await page.text()
    assert re.search(r'data-state="on_call"[^>]*>On a call<', html)


async def _state_is(seen: Any, state: str) -> bool:
    return bool((await seen())["state"] == state)


async def test_a_wrap_up_the_controller_timed_says_when_it_ends(
    served: Served, browsers: Browsers,
) -> None:
    alice = await signed_in(browsers, "alice")
    await on_duty(alice)
    ends = utc_now() + timedelta(seconds=30)
    async with served.store.transaction() as tx:
        await tx.agents.try_change_presence(served.people["alice"].id,
                                            PresenceEvent.WRAP_UP_BEGINS, actor=CONTROLLER,
                                            ends_at=ends.isoformat())
    served.events.publish(AGENTS_TOPIC, AgentChanged(served.people["alice"].id))

    async def me() -> dict[str, Any]:
        return dict((await snapshot_of(alice, served))["me"])

    await until(lambda: _state_is(me, "wrap_up"), 5)
    assert (await me())["wrap_up_until"] == ends.isoformat()
    # Chosen by hand, a wrap-up lasts until the agent chooses again: no end to count to.
    assert (await alice.post_json("/api/presence", {"presence": "wrap_up"})).status == 200
    assert (await alice.post_json("/api/presence", {"presence": "available"})).status == 200
    assert (await alice.post_json("/api/presence", {"presence": "wrap_up"})).status == 200
    await until(lambda: _wrap_up_without_end(me), 5)


async def _wrap_up_without_end(me: Any) -> bool:
    seen = await me()
    return bool(seen["state"] == "wrap_up" and seen["wrap_up_until"] is None)


async def test_someone_who_takes_no_calls_has_no_duty_switch_and_cannot_go_on_duty(
    served: Served, browsers: Browsers,
) -> None:
    sam = await signed_in(browsers, "sam")
    await on_duty(sam)
    admin = await signed_in(browsers, "ada")
    sam_id = served.people["sam"].id
    changed = await admin.post_json(f"/api/admin/agents/{sam_id}/takes-calls",
                                    {"takes_calls": False})
    assert changed.status == 200
    agent = (await changed.json())["agent"]
    # Stopping taking calls goes off duty with it: no card for a desk without a switch.
    assert (agent["takes_calls"], agent["on_duty"], agent["state"]) == (False, False, "off_duty")
    async with sam.http.get("/") as page:
        html = await page.text()
    assert 'id="duty"' not in html and 'id="presence"' not in html
    refused = await sam.post_json("/api/duty", {"on_duty": True})
    assert refused.status == 409 and (await refused.json())["error"] == "takes_no_calls"
    bad = await admin.post_json(f"/api/admin/agents/{sam_id}/takes-calls", {"takes_calls": 1})
    assert bad.status == 400
    async with admin.http.get("/api/admin/audit?action=takes_calls_change") as response:
        [line] = (await response.json())["events"]
    assert line["said"] == "Ada set Sam to take no calls"


async def test_the_audit_log_is_filtered_by_person_action_and_date_on_the_server(
    served: Served, browsers: Browsers,
) -> None:
    alice = await signed_in(browsers, "alice")
    await on_duty(alice)
    admin = await signed_in(browsers, "ada")
    alice_id, ada_id = served.people["alice"].id, served.people["ada"].id

    async def lines(query: str) -> list[dict[str, Any]]:
        async with admin.http.get(f"/api/admin/audit?{query}") as response:
            assert response.status == 200, await response.text()
            return list((await response.json())["events"])

    mine = await lines(f"person={alice_id}")
    assert {e["action"] for e in mine} == {"login", "duty_change"}
    assert {e["said"] for e in mine} == {"Alice signed in from 127.0.0.1", "Alice went on duty"}
    assert [e["actor"] for e in await lines(f"person={ada_id}&action=login")] == ["ada"]
    today = utc_now().astimezone(served.app[DASHBOARD].options.site.zone).date()
    assert len(await lines(f"from={today}&to={today}")) == 3
    assert await lines(f"to={today - timedelta(days=1)}") == []
    # Each line has its time in the pages' one format.
    assert all(len(e["when"]) == 16 and e["when"][10] == " " for e in mine)

    for query, why in (("person=999", "person is the id"), ("person=ada", "person is the id"),
                       ("action=login;drop", "action is one of"),
                       ("from=12/01/2026", "from and to are dates"),
                       (f"from={today}&to={today - timedelta(days=1)}", "to is on or after"),
                       ("limit=0", "limit is 1 to")):
        async with admin.http.get(f"/api/admin/audit?{query}") as response:
            body = await response.json()
        assert response.status == 400 and body["error"] == "bad_filter", query
        assert why in body["reason"], (query, body)


async def test_the_metrics_count_an_agent_on_a_call_as_on_a_call(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    events = EventHub()
    async with store.transaction() as tx:
        agent = await tx.agents.create(login="a", display_name="A", sip_user="a",
                                       sip_password="x")
        await tx.agents.set_duty(agent.id, True)
    registry = CollectorRegistry()
    metrics = SwitchboardMetrics(registry, events, store)
    ready = asyncio.Event()
    task = asyncio.create_task(metrics.run(ready))

    def agents_in(state: str) -> float:
        return registry.get_sample_value("switchboard_agents", {"state": state}) or 0.0

    try:
        await ready.wait()
        assert (agents_in("available"), agents_in("on_call")) == (1, 0)
        handoff = await offer_card(store, events)
        async with store.transaction() as tx:
            await tx.handoffs.accept(handoff.id, agent.id)
        events.publish(CARDS_TOPIC, Taken(handoff.id, agent.id))
        await until(lambda: agents_in("on_call") == 1, 5)
        assert agents_in("available") == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.engine.dispose()
