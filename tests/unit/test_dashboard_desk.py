"""The agent desk's JSON actions (duty, presence, accept) and its page script."""

from __future__ import annotations

import re
from pathlib import Path

from handoff.agents import EndpointKind, Presence
from handoff.store.models import Agent
from tests.dashboard_fixtures import (
    PASSWORD,
    Browsers,
    Served,
    cheap_passwords,
    offer_card,
    on_duty,
    signed_in,
)
from web.dashboard.routes import STATIC_DIR


async def test_going_on_duty_makes_the_agent_available(served: Served,
                                                       browsers: Browsers) -> None:
    agent = await signed_in(browsers, "alice")
    response = await agent.post_json("/api/duty", {"on_duty": True})
    assert response.status == 200
    me = (await response.json())["me"]
    assert (me["on_duty"], me["presence"]) == (True, "available")
    async with served.store.transaction() as tx:
        assert [a.login for a in await tx.agents.available()] == ["alice"]


async def test_duty_and_presence_refuse_malformed_bodies_with_a_reason(
    browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    for path, body in (("/api/duty", {"on_duty": "yes"}), ("/api/presence", {"presence": "x"}),
                       ("/api/duty", ["not", "an", "object"])):
        response = await agent.post_json(path, body)
        assert response.status == 400
        assert (await response.json())["reason"]


async def test_off_duty_is_offline_and_offline_in_the_menu_is_going_off_duty(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    await agent.post_json("/api/duty", {"on_duty": True})
    await agent.post_json("/api/presence", {"presence": "away"})
    off = (await (await agent.post_json("/api/duty", {"on_duty": False})).json())["me"]
    assert (off["on_duty"], off["presence"]) == (False, "offline")
    # Back on duty the agent is reachable again, whatever they were before.
    on = (await (await agent.post_json("/api/duty", {"on_duty": True})).json())["me"]
    assert (on["on_duty"], on["presence"]) == (True, "available")
    menu = await agent.post_json("/api/presence", {"presence": "offline"})
    assert menu.status == 200
    me = (await menu.json())["me"]
    assert (me["on_duty"], me["presence"]) == (False, "offline")
    async with served.store.transaction() as tx:
        assert await tx.agents.available() == []


async def test_off_duty_choosing_a_presence_is_refused_and_changes_nothing(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    for presence in ("available", "away", "wrap_up"):
        response = await agent.post_json("/api/presence", {"presence": presence})
        assert response.status == 409
        body = await response.json()
        assert (body["error"], body["reason"]) == (
            "off_duty", "Go on duty before choosing a presence.")
    async with served.store.transaction() as tx:
        alice = await tx.agents.get(served.people["alice"].id)
        assert (alice.on_duty, alice.presence) == (False, Presence.OFFLINE)
        assert [e.action for e in await tx.audit.recent()] == ["login"]


async def test_each_duty_and_presence_change_is_audited_under_the_agent_from_event_to(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    await agent.post_json("/api/duty", {"on_duty": True})
    await agent.post_json("/api/presence", {"presence": "wrap_up"})
    await agent.post_json("/api/presence", {"presence": "wrap_up"})  # a second tab
    async with served.store.transaction() as tx:
        lines = [(e.actor, e.action, e.detail) for e in reversed(await tx.audit.recent())]
    assert lines[1:] == [
        ("alice", "duty_change", {"from": "offline", "event": "go_on_duty",
                                  "presence": "available", "on_duty": True}),
        ("alice", "presence_change", {"from": "available", "event": "choose_wrap_up",
                                      "presence": "wrap_up", "on_duty": True}),
    ]


async def desk_phone_agent(served: Served, login: str) -> None:
    async with served.store.transaction() as tx:
        await tx.agents.create(
            login=login, display_name=login.title(), sip_user=f"sb-{login}",
            sip_password="s3cret-desk", endpoint_kind=EndpointKind.DESKPHONE,
            password_hash=cheap_passwords().hash(PASSWORD))


async def test_a_desk_phone_the_pbx_reports_unregistered_keeps_its_agent_off_duty(
    served: Served, browsers: Browsers,
) -> None:
    await desk_phone_agent(served, "dora")
    served.commands.unregistered.add("sb-dora")
    dora = await signed_in(browsers, "dora")
    refused = await dora.post_json("/api/duty", {"on_duty": True})
    assert refused.status == 409
    body = await refused.json()
    assert body["error"] == "phone_unregistered"
    assert "sb-dora" in body["reason"]
    async with served.store.transaction() as tx:
        agent = await tx.agents.by_login("dora")
    assert agent is not None and not agent.on_duty
    # Plugged in and registered: on duty. Going off duty never asks.
    served.commands.unregistered.clear()
    assert (await dora.post_json("/api/duty", {"on_duty": True})).status == 200
    served.commands.unregistered.add("sb-dora")
    assert (await dora.post_json("/api/duty", {"on_duty": False})).status == 200


async def test_a_browser_phone_agent_is_not_asked_about_a_desk_phone(
    served: Served, browsers: Browsers,
) -> None:
    # The tab checks its own softphone's registration before it asks to go on duty.
    served.commands.unregistered.add("sb-alice")
    alice = await signed_in(browsers, "alice")
    assert (await alice.post_json("/api/duty", {"on_duty": True})).status == 200


async def test_accept_hands_the_card_to_the_call_controller(served: Served,
                                                            browsers: Browsers) -> None:
    agent = await signed_in(browsers, "alice")
    await agent.post_json("/api/duty", {"on_duty": True})
    handoff = await offer_card(served.store, served.events)
    response = await agent.post_json(f"/api/handoffs/{handoff.id}/accept", {})
    assert response.status == 200
    assert served.commands.accepted == [(handoff.id, served.people["alice"].id)]


async def test_the_loser_of_an_accept_race_hears_who_took_the_call(
    served: Served, browsers: Browsers,
) -> None:
    alice, bob = await signed_in(browsers, "alice"), await signed_in(browsers, "bob")
    await on_duty(alice, bob)
    handoff = await offer_card(served.store, served.events)
    assert (await bob.post_json(f"/api/handoffs/{handoff.id}/accept", {})).status == 200
    lost = await alice.post_json(f"/api/handoffs/{handoff.id}/accept", {})
    assert lost.status == 409
    body = await lost.json()
    assert body["error"] == "already_taken"
    assert body["taken_by"] == {"id": served.people["bob"].id, "display_name": "Bob"}
    assert "Bob" in body["reason"]


async def test_an_agent_off_duty_cannot_accept(served: Served, browsers: Browsers) -> None:
    agent = await signed_in(browsers, "alice")
    handoff = await offer_card(served.store, served.events)
    response = await agent.post_json(f"/api/handoffs/{handoff.id}/accept", {})
    assert response.status == 409
    assert (await response.json())["error"] == "off_duty"
    assert served.commands.accepted == []


def test_the_desk_script_puts_data_on_the_page_as_text_only() -> None:
    # Caller names and AI summaries are attacker-controlled text (B4, XSS).
    for script in Path(STATIC_DIR).glob("*.js"):
        source = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, (script.name, sink)
    assert "createTextNode" in (Path(STATIC_DIR) / "desk.js").read_text()


def test_templates_never_switch_autoescape_off() -> None:
    templates = Path(STATIC_DIR).parent / "templates"
    for template in templates.glob("*.html"):
        assert not re.search(r"\|\s*safe|autoescape\s+false", template.read_text()), template


async def test_an_auto_answering_desk_phone_set_to_an_open_line_is_called_for_one_on_duty(
    served: Served, browsers: Browsers,
) -> None:
    await desk_phone_agent(served, "dora")
    await desk_phone_agent(served, "dina")
    served.commands.open_lines = True
    admin = await signed_in(browsers, "ada")
    dora_id = (await _agent(served, "dora")).id
    alice_id = served.people["alice"].id
    changed = await admin.post_json(f"/api/admin/agents/{dora_id}/open-line", {"open_line": True})
    assert changed.status == 200
    async with admin.http.get("/admin") as page:
        html = await page.text()
    # The option is offered for desk phones only, ticked for Dora.
    assert f'class="open-line" data-agent="{dora_id}" checked' in html
    assert f'class="open-line" data-agent="{alice_id}"' not in html
    # A browser phone's line is the server's setting, not a person's option.
    refused = await admin.post_json(f"/api/admin/agents/{alice_id}/open-line",
                                    {"open_line": True})
    assert refused.status == 409 and (await refused.json())["error"] == "not_a_desk_phone"
    bad = await admin.post_json(f"/api/admin/agents/{dora_id}/open-line", {"open_line": "on"})
    assert bad.status == 400
    async with admin.http.get("/api/admin/audit?action=open_line_change") as response:
        [line] = (await response.json())["events"]
    assert line["said"] == "Ada gave Dora's desk phone an open line"
    # On duty, Dora's phone is called for her line, asked to answer by itself; Dina's
    # (without the option) keeps the ringing path: nothing is called.
    for login in ("dora", "dina"):
        desk = await signed_in(browsers, login)
        assert (await desk.post_json("/api/duty", {"on_duty": True})).status == 200
    assert served.commands.panel == [("open_line", "sb-dora", True)]
    # Taken off duty by an admin (she no longer takes calls): no tab hangs a desk
    # phone's line up, the server does.
    served.commands.panel.clear()
    assert (await admin.post_json(f"/api/admin/agents/{dora_id}/takes-calls",
                                  {"takes_calls": False})).status == 200
    assert served.commands.panel == [("close_line", "sb-dora")]


async def _agent(served: Served, login: str) -> Agent:
    async with served.store.transaction() as tx:
        agent = await tx.agents.by_login(login)
    assert agent is not None
    return agent
