"""The dashboard WebSocket over a real socket: handshake checks (R20), snapshot and
numbered deltas, resume with since=, sign-out closing the socket, message floods (R23),
and Accept asked over the socket."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from handoff.events import CARDS_TOPIC, CallEnded, Taken
from handoff.handoffs import HandoffEvent
from tests.dashboard_fixtures import (
    Browser,
    Browsers,
    Served,
    offer_card,
    on_duty,
    signed_in,
)
from tests.waiting import until
from web.dashboard import DASHBOARD
from web.dashboard.hub import CloseCode, revalidate_forever


def socket(browser: Browser, served: Served, query: str = "",
           origin: str | None = None) -> Any:
    return browser.http.ws_connect(f"/ws{query}", headers={"Origin": origin or served.origin},
                                   heartbeat=None)


async def next_message(ws: aiohttp.ClientWebSocketResponse, op: str | None = None
                       ) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = await ws.receive_json(timeout=5)
        if op is None or message.get("op") == op:
            return message


async def test_a_handshake_without_a_session_is_refused_with_401(
    served: Served, browsers: Browsers,
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with socket(browsers(), served):
            pass
    assert refused.value.status == 401


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:1", "null"])
async def test_a_handshake_from_another_origin_is_refused_with_403_before_upgrade(
    origin: str, served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with socket(agent, served, origin=origin):
            pass
    assert refused.value.status == 403


async def test_a_tab_gets_a_snapshot_then_numbered_deltas_as_cards_come_and_go(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    async with socket(agent, served) as ws:
        snapshot = await next_message(ws)
        assert snapshot["type"] == "snapshot"
        assert snapshot["cards"] == []
        assert snapshot["me"]["login"] == "alice"
        handoff = await offer_card(served.store, served.events, caller_name="Jeanne Martin")
        added = await next_message(ws, "card_added")
        assert added["seq"] > snapshot["seq"]
        assert added["card"] | {"waiting_since": None} == {
            "handoff_id": handoff.id, "call_id": handoff.call_id,
            "caller_number": "+33123456789", "caller_name": "Jeanne Martin",
            "summary": "Disputes an invoice", "reason": "caller_request", "topic": "billing",
            "why": "Asked for a person · Billing", "priority": 0, "urgency": "normal",
            "attempt": 1, "waiting_since": None,
            "targeted": False, "note": "",
        }
        served.events.publish(CARDS_TOPIC, Taken(handoff.id, served.people["bob"].id))
        removed = await next_message(ws, "card_removed")
        assert removed["seq"] > added["seq"]
        assert removed["taken_by"] == {"id": served.people["bob"].id, "display_name": "Bob"}


async def test_deltas_written_straight_to_the_socket_arrive_whole_at_any_size(
    served: Served, browsers: Browsers,
) -> None:
    # The hub frames each delta once and writes it to idle tabs itself; the browser's
    # WebSocket (here aiohttp's client) must read those frames as any other, including
    # the 16- and 64-bit length forms.
    agent = await signed_in(browsers, "alice")
    async with socket(agent, served) as ws:
        await next_message(ws)
        for size in (10, 200, 70_000):
            summary = "s" * size
            handoff = await offer_card(served.store, served.events, summary=summary)
            added = await next_message(ws, "card_added")
            assert added["card"]["handoff_id"] == handoff.id
            assert added["card"]["summary"] == summary


async def test_a_reconnecting_tab_resumes_with_since_or_gets_a_fresh_snapshot(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    async with socket(agent, served) as ws:
        snapshot = await next_message(ws)
    board = served.app[DASHBOARD].board
    handoff = await offer_card(served.store, served.events)
    await until(lambda: handoff.id in board.cards)
    query = f"?since={snapshot['seq']}&epoch={snapshot['epoch']}"
    async with socket(agent, served, query) as ws:
        resumed = await next_message(ws)
        missed = await next_message(ws)
    assert resumed["type"] == "resumed"
    assert missed["op"] == "card_added"
    assert missed["card"]["handoff_id"] == handoff.id
    async with socket(agent, served, "?since=0&epoch=from-a-previous-run") as ws:
        fresh = await next_message(ws)
    assert fresh["type"] == "snapshot"
    assert [c["handoff_id"] for c in fresh["cards"]] == [handoff.id]


async def test_signing_out_closes_the_open_socket_of_that_session(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    async with socket(agent, served) as ws:
        await next_message(ws)
        async with agent.http.post("/logout", data={"csrf_token": agent.csrf},
                                   allow_redirects=False) as response:
            assert response.status == 303
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == CloseCode.SIGNED_OUT


async def test_a_session_deleted_elsewhere_closes_its_socket_at_the_next_check(
    browsers: Browsers, served: Served,
) -> None:
    agent = await signed_in(browsers, "alice")
    dashboard = served.app[DASHBOARD]
    async with socket(agent, served) as ws:
        await next_message(ws)
        # Another process signed her out (or an admin revoked her): only the row is gone.
        async with served.store.transaction() as tx:
            await tx.sessions.delete_for_agent(served.people["alice"].id)
        sweep = asyncio.create_task(
            revalidate_forever(dashboard.hub, dashboard.sessions.still_live, every_s=0.01)
        )
        try:
            await ws.receive(timeout=5)
        finally:
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)
        assert ws.close_code == CloseCode.SIGNED_OUT


async def test_sessionless_handshakes_from_one_address_get_429_but_a_signed_in_colleague_connects(
    served: Served, browsers: Browsers,
) -> None:
    # R23: a script opening sockets with no session, behind the office's one address.
    limit = served.app[DASHBOARD].options.ws_refused_per_minute
    script = browsers()
    for _ in range(limit):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with socket(script, served):
                pass
        assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as throttled:
        async with socket(script, served):
            pass
    assert throttled.value.status == 429
    assert throttled.value.headers is not None
    assert 0 < int(throttled.value.headers["Retry-After"]) <= 60
    # Alice, signed in at the same address, opens her desk's socket as usual.
    alice = await signed_in(browsers, "alice")
    async with socket(alice, served) as ws:
        assert (await next_message(ws))["type"] == "snapshot"


async def test_a_tab_flooding_the_socket_is_closed(served: Served, browsers: Browsers) -> None:
    agent = await signed_in(browsers, "alice")
    async with socket(agent, served) as ws:
        await next_message(ws)
        for _ in range(50):
            await ws.send_str("x")
        while not ws.closed:
            message = await ws.receive(timeout=5)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert ws.close_code == CloseCode.POLICY


async def test_an_oversized_frame_closes_the_socket(served: Served, browsers: Browsers) -> None:
    agent = await signed_in(browsers, "alice")
    async with socket(agent, served) as ws:
        await next_message(ws)
        await ws.send_str("x" * 100_000)
        while not ws.closed:
            message = await ws.receive(timeout=5)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


# ---- requests over the socket (Accept) ------------------------------------------------


async def reply_to(ws: aiohttp.ClientWebSocketResponse, ref: int | None) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = await ws.receive_json(timeout=5)
        if message.get("type") == "reply" and message.get("ref") == ref:
            return message


async def ask_accept(ws: aiohttp.ClientWebSocketResponse, handoff_id: int, ref: int
                     ) -> dict[str, Any]:
    await ws.send_json({"type": "accept", "handoff_id": handoff_id, "ref": ref})
    return await reply_to(ws, ref)


async def test_accept_over_the_socket_answers_as_the_post_would(
    served: Served, browsers: Browsers,
) -> None:
    alice, bob = await signed_in(browsers, "alice"), await signed_in(browsers, "bob")
    await on_duty(alice, bob)
    handoff = await offer_card(served.store, served.events)
    async with socket(alice, served) as alice_ws, socket(bob, served) as bob_ws:
        await next_message(alice_ws)
        await next_message(bob_ws)
        won = await ask_accept(bob_ws, handoff.id, 7)
        lost = await ask_accept(alice_ws, handoff.id, 1)
    assert (won["status"], won["body"]) == (200, {"accepted": handoff.id})
    assert served.commands.accepted == [(handoff.id, served.people["bob"].id)]
    assert lost["status"] == 409
    assert lost["body"]["error"] == "already_taken"
    assert lost["body"]["taken_by"] == {"id": served.people["bob"].id, "display_name": "Bob"}


async def test_accept_over_a_socket_opened_on_duty_is_refused_once_off_duty(
    served: Served, browsers: Browsers,
) -> None:
    # The socket's viewer dates from its handshake: duty is judged by the accept itself.
    agent = await signed_in(browsers, "alice")
    await on_duty(agent)
    handoff = await offer_card(served.store, served.events)
    async with socket(agent, served) as ws:
        await next_message(ws)
        await agent.post_json("/api/duty", {"on_duty": False})
        refused = await ask_accept(ws, handoff.id, 1)
    assert refused["status"] == 409
    assert refused["body"]["error"] == "off_duty"
    assert served.commands.accepted == []


@pytest.mark.parametrize("request_text", [
    "not json",
    '["accept", 1]',
    '{"type": "hangup_everyone", "ref": 3}',
    '{"type": "accept", "handoff_id": "1", "ref": 3}',
    '{"type": "accept", "handoff_id": true, "ref": 3}',
    '{"type": "accept", "ref": 3}',
])
async def test_a_malformed_socket_request_gets_a_400_with_a_reason_and_the_socket_stays(
    request_text: str, served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    await on_duty(agent)
    handoff = await offer_card(served.store, served.events)
    async with socket(agent, served) as ws:
        await next_message(ws)
        await ws.send_str(request_text)
        ref = 3 if '"ref": 3' in request_text else None
        refused = await reply_to(ws, ref)
        accepted = await ask_accept(ws, handoff.id, 4)
    assert refused["status"] == 400
    assert refused["body"]["error"] == "bad_request"
    assert refused["body"]["reason"]
    assert accepted["status"] == 200
    assert served.commands.accepted == [(handoff.id, served.people["alice"].id)]


async def test_one_agent_accepting_two_cards_at_once_from_two_tabs_gets_one_call(
    served: Served, browsers: Browsers,
) -> None:
    # Two tabs of the same agent, each clicking Accept on a different card at once: the
    # phone must ring for one caller only; the other card stays for the other agents.
    first_tab, second_tab = await signed_in(browsers, "alice"), await signed_in(browsers, "alice")
    await on_duty(first_tab)
    card_a = await offer_card(served.store, served.events, caller_name="Jeanne")
    card_b = await offer_card(served.store, served.events, caller_name="Paul",
                              caller_number="+33987654321")
    async with socket(first_tab, served) as ws_a, socket(second_tab, served) as ws_b:
        await next_message(ws_a)
        await next_message(ws_b)
        replies = await asyncio.gather(ask_accept(ws_a, card_a.id, 1),
                                       ask_accept(ws_b, card_b.id, 2))
    assert sorted(reply["status"] for reply in replies) == [200, 409]
    [refused] = [reply for reply in replies if reply["status"] == 409]
    assert refused["body"]["error"] == "busy"
    assert "already on a call" in refused["body"]["reason"]
    assert len(served.commands.accepted) == 1


async def test_one_agent_accepting_two_cards_by_socket_and_post_at_once_gets_one_call(
    served: Served, browsers: Browsers,
) -> None:
    # A tab whose socket is reconnecting sends its Accept as a POST, while another tab's
    # goes over its socket.
    agent = await signed_in(browsers, "alice")
    await on_duty(agent)
    card_a = await offer_card(served.store, served.events, caller_name="Jeanne")
    card_b = await offer_card(served.store, served.events, caller_name="Paul",
                              caller_number="+33987654321")
    async with socket(agent, served) as ws:
        await next_message(ws)

        async def by_post() -> dict[str, Any]:
            response = await agent.post_json(f"/api/handoffs/{card_b.id}/accept", {})
            return {"status": response.status, "body": await response.json()}

        replies = await asyncio.gather(ask_accept(ws, card_a.id, 1), by_post())
    assert sorted(reply["status"] for reply in replies) == [200, 409]
    assert [r["body"]["error"] for r in replies if r["status"] == 409] == ["busy"]
    assert len(served.commands.accepted) == 1


async def test_a_desk_learns_its_agent_is_busy_when_a_card_is_taken_and_free_after(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    await on_duty(agent)
    alice = served.people["alice"].id
    handoff = await offer_card(served.store, served.events)
    async with socket(agent, served) as ws:
        assert (await next_message(ws))["me"]["busy"] is False
        assert (await ask_accept(ws, handoff.id, 1))["status"] == 200
        served.events.publish(CARDS_TOPIC, Taken(handoff.id, alice))
        while (changed := await next_message(ws, "agent_changed"))["agent"]["busy"] is False:
            pass
        assert changed["agent"]["id"] == alice
        async with served.store.transaction() as tx:
            await tx.handoffs.apply(handoff.id, HandoffEvent.CALLER_HUNG_UP)
        served.events.publish(CARDS_TOPIC, CallEnded(handoff.call_id))
        freed = await next_message(ws, "agent_changed")
    assert (freed["agent"]["id"], freed["agent"]["busy"]) == (alice, False)
