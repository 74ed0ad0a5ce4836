"""The softphone's credentials and the call panel's actions, with their access rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handoff.calls import CallEvent, Speaker
from handoff.handoffs import HandoffEvent
from handoff.live import LineBackoff, NodeUnanswered
from handoff.store.models import Handoff
from tests.dashboard_fixtures import Browser, Served, offer_card, serve_dashboard
from web.dashboard.typedefs import SoftphoneSettings

PBX_WS = "ws://127.0.0.1:18088/ws"


@pytest.fixture
async def with_phone(tmp_path: Path) -> AsyncIterator[Served]:
    async for running in serve_dashboard(
            tmp_path, softphone=SoftphoneSettings(lambda: PBX_WS)):
        yield running


@pytest.fixture
async def browsers_of(with_phone: Served) -> AsyncIterator[list[Browser]]:
    opened: list[Browser] = []
    yield opened
    for browser in opened:
        await browser.close()


async def signed_in(served: Served, opened: list[Browser], login: str) -> Browser:
    browser = Browser(served.origin)
    opened.append(browser)
    assert (await browser.login(login)).status == 303
    return browser


async def test_a_line_is_asked_for_on_duty_only_and_refused_where_lines_are_off(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    alice = await signed_in(with_phone, browsers_of, "alice")
    response = await alice.post_json("/api/line", {})
    assert (response.status, (await response.json())["error"]) == (409, "off_duty")
    assert (await alice.post_json("/api/duty", {"on_duty": True})).status == 200
    # This server gives no open lines (the commands say so): the tab's Accept rings.
    response = await alice.post_json("/api/line", {})
    assert (response.status, (await response.json())["error"]) == (409, "line_refused")
    assert (await alice.post_json("/api/line", {}, csrf="")).status == 403
    # Her last lines carried no audio: the tab is told when to ask again.
    with_phone.commands.open_lines = True
    with_phone.commands.line_refused = LineBackoff(with_phone.people["alice"].id, 3.2)
    response = await alice.post_json("/api/line", {})
    body = await response.json()
    assert (response.status, body["error"], body["retry_after_s"]) == (503, "line_backoff", 4)
    assert response.headers["Retry-After"] == "4"


async def connected_call(served: Served, login: str) -> Handoff:
    """A call an agent took: the handoff is connected, the call is with the agent."""
    handoff = await offer_card(served.store, served.events, caller_name="Jeanne Martin")
    agent = served.people[login]
    async with served.store.transaction() as tx:
        await tx.agents.set_duty(agent.id, True)
        await tx.handoffs.accept(handoff.id, agent.id)
        await tx.handoffs.apply(handoff.id, HandoffEvent.DIAL_AGENT)
        handoff = await tx.handoffs.apply(handoff.id, HandoffEvent.AGENT_ANSWERED)
        await tx.calls.apply(handoff.call_id, CallEvent.AGENT_CONNECTED, agent_channel_id="a")
        await tx.transcripts.append(handoff.call_id, Speaker.AI, "How can I help?")
        await tx.transcripts.append(handoff.call_id, Speaker.CALLER, "My invoice is wrong.")
    return handoff


async def test_the_softphone_gets_its_own_agents_sip_credentials_only(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    alice = await signed_in(with_phone, browsers_of, "alice")
    async with alice.http.get("/api/softphone") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert body == {"websocket_url": PBX_WS, "sip_uri": "sip:sb-alice@127.0.0.1",
                    "sip_user": "sb-alice", "password": "sip-alice",
                    "display_name": "Alice", "open_line": False}
    anonymous = Browser(with_phone.origin)
    browsers_of.append(anonymous)
    async with anonymous.http.get("/api/softphone") as response:
        assert response.status == 401


async def test_the_desk_page_may_connect_to_the_pbx_websocket_and_nowhere_else(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    alice = await signed_in(with_phone, browsers_of, "alice")
    async with alice.http.get("/") as response:
        policy = response.headers["Content-Security-Policy"]
    assert "connect-src 'self' ws://127.0.0.1:18088;" in policy


async def test_without_a_softphone_the_desk_says_so(served: Served) -> None:
    alice = Browser(served.origin)
    try:
        await alice.login("alice")
        async with alice.http.get("/api/softphone") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "no_softphone"
    finally:
        await alice.close()


async def test_the_agent_on_the_call_sees_it_with_its_transcript(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    handoff = await connected_call(with_phone, "alice")
    alice = await signed_in(with_phone, browsers_of, "alice")
    bob = await signed_in(with_phone, browsers_of, "bob")
    await bob.post_json("/api/duty", {"on_duty": True})
    async with alice.http.get("/api/calls/current") as response:
        call = (await response.json())["call"]
    assert call["call_id"] == handoff.call_id
    assert call["caller_name"] == "Jeanne Martin"
    assert [(t["speaker"], t["text"]) for t in call["transcript"]] == [
        ("ai", "How can I help?"), ("caller", "My invoice is wrong.")]
    assert [c["display_name"] for c in call["colleagues"]] == ["Bob"]
    async with bob.http.get("/api/calls/current") as response:
        assert (await response.json())["call"] is None


async def test_the_agent_on_the_call_ends_returns_notes_and_transfers_it(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    handoff = await connected_call(with_phone, "alice")
    alice = await signed_in(with_phone, browsers_of, "alice")
    base = f"/api/calls/{handoff.call_id}"
    bob_id = with_phone.people["bob"].id
    assert (await alice.post_json(f"{base}/notes", {"text": " Wants a refund "})).status == 200
    assert (await alice.post_json(f"{base}/transfer",
                                  {"to_agent_id": bob_id, "note": "VIP"})).status == 200
    assert (await alice.post_json(f"{base}/return-to-ai", {})).status == 200
    assert (await alice.post_json(f"{base}/end", {})).status == 200
    alice_id = with_phone.people["alice"].id
    assert with_phone.commands.panel == [
        ("transfer", handoff.call_id, alice_id, bob_id, "VIP"),
        ("return_to_ai", handoff.call_id), ("end_call", handoff.call_id)]
    async with with_phone.store.transaction() as tx:
        notes = await tx.notes.for_call(handoff.call_id)
        actions = [e.action for e in await tx.audit.recent()]
    assert [(n.text, n.author_id) for n in notes] == [("Wants a refund", alice_id)]
    assert {"transfer", "returned_to_ai", "call_ended"} <= set(actions)


async def test_another_agent_cannot_touch_the_call_but_a_supervisor_can_end_it(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    handoff = await connected_call(with_phone, "alice")
    bob = await signed_in(with_phone, browsers_of, "bob")
    sam = await signed_in(with_phone, browsers_of, "sam")
    base = f"/api/calls/{handoff.call_id}"
    for path, body in (("end", {}), ("return-to-ai", {}), ("notes", {"text": "x"}),
                       ("transfer", {"to_agent_id": 1, "note": ""})):
        # Another agent's call looks exactly like a call that does not exist.
        refused = await bob.post_json(f"{base}/{path}", body)
        assert refused.status == 404, path
    assert (await bob.post_json("/api/calls/no-such-call/end", {})).status == 404
    assert with_phone.commands.panel == []
    assert (await sam.post_json(f"{base}/end", {})).status == 200
    # A supervisor has no leg of their own on the call to hand over.
    assert (await sam.post_json(f"{base}/transfer", {"to_agent_id": 2})).status == 409
    assert with_phone.commands.panel == [("end_call", handoff.call_id)]


async def test_call_panel_actions_need_the_csrf_token(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    handoff = await connected_call(with_phone, "alice")
    alice = await signed_in(with_phone, browsers_of, "alice")
    response = await alice.post_json(f"/api/calls/{handoff.call_id}/end", {}, csrf="")
    assert response.status == 403
    assert with_phone.commands.panel == []


async def test_malformed_notes_and_transfers_are_refused_with_a_reason(
    with_phone: Served, browsers_of: list[Browser],
) -> None:
    handoff = await connected_call(with_phone, "alice")
    alice = await signed_in(with_phone, browsers_of, "alice")
    base = f"/api/calls/{handoff.call_id}"
    for path, body in (("notes", {"text": "  "}), ("notes", {"text": "x" * 2001}),
                       ("transfer", {"to_agent_id": "bob"}),
                       ("transfer", {"to_agent_id": True})):
        response = await alice.post_json(f"{base}/{path}", body)
        assert response.status == 400, body
        assert (await response.json())["reason"]


async def test_a_command_another_node_did_not_answer_is_refused_503_naming_that_node(
    with_phone: Served, browsers_of: list[Browser], monkeypatch: pytest.MonkeyPatch,
) -> None:
    handoff = await connected_call(with_phone, "alice")
    alice = await signed_in(with_phone, browsers_of, "alice")

    async def unanswered(*_: object) -> None:
        raise NodeUnanswered("node-a", "did not answer within 4 s")

    for command in ("end_call", "return_to_ai", "transfer"):
        monkeypatch.setattr(with_phone.commands, command, unanswered)
    base = f"/api/calls/{handoff.call_id}"
    for path, body in (("end", {}), ("return-to-ai", {}),
                       ("transfer", {"to_agent_id": with_phone.people["bob"].id})):
        response = await alice.post_json(f"{base}/{path}", body)
        refused = await response.json()
        assert (response.status, refused["error"], refused["node"]) == (
            503, "node_unavailable", "node-a"), path
        assert "node-a, which holds this call, did not answer" in refused["reason"]
    async with with_phone.store.transaction() as tx:  # nothing said done
        actions = {e.action for e in await tx.audit.recent()}
    assert not actions & {"transfer", "returned_to_ai", "call_ended"}
