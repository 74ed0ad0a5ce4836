"""The AI engine control API: tokens, validation against the OpenAPI file, call states,
and the events stream, with a real SQLite store and a fake call controller
(tests/ai_api_fixtures.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator

from handoff.calls import CallEvent, CallOutcome, CallState, Speaker
from handoff.events import (
    CALLS_TOPIC,
    CARDS_TOPIC,
    TRANSCRIPTS_TOPIC,
    CallChanged,
    CallEnded,
    Caller,
    CallStarted,
    Offered,
    ReturnedToAi,
    assistant_topic,
    call_topic,
)
from handoff.handoffs import HandoffEvent
from handoff.states import InvalidTransition
from handoff.store import NotFound, Store
from tests.ai_api_fixtures import AUTH, SALES_TOKEN, Api
from web.ai_api import (
    API_PREFIX,
    MAX_BODY_BYTES,
    SPEC_PATH,
    ControlApiSpec,
    hash_control_token,
)
from web.ai_api.events import TOKEN_CHECK_S, TOKEN_REVOKED
from web.ai_api.state import TOKEN_FAILURES, TOKEN_WINDOW_S

# ---- the contract itself ------------------------------------------------------------------


def test_the_openapi_file_holds_valid_json_schemas_for_every_served_operation() -> None:
    document = json.loads(SPEC_PATH.read_text())
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert set(ControlApiSpec(document).operations) == {
        "postTranscript", "requestHandoff", "endCall", "events",
    }


# ---- tokens ------------------------------------------------------------------------------


async def test_a_request_without_a_token_is_401_and_says_how_to_send_one(api: Api) -> None:
    call_id = await api.new_call()
    status, body = await api.post(call_id, "transcript", {"speaker": "ai", "text": "hi"},
                                  headers={})
    assert status == 401
    assert "Bearer" in body["error"]


async def test_a_wrong_token_is_401(api: Api) -> None:
    call_id = await api.new_call()
    async with api.client.post(f"{API_PREFIX}/calls/{call_id}/transcript",
                               json={"speaker": "ai", "text": "hi"},
                               headers={"Authorization": "Bearer not-the-token"}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["error"] == "the token is not valid"


async def test_a_call_of_another_assistant_looks_exactly_like_an_unknown_call(api: Api) -> None:
    theirs = await api.new_call("sales")
    unknown = "6f1c1f3e-8a55-4d8e-9d3c-3f7b7f6c0e11"
    line = {"speaker": "ai", "text": "hi"}
    status_theirs, body_theirs = await api.post(theirs, "transcript", line)
    status_unknown, body_unknown = await api.post(unknown, "transcript", line)
    assert status_theirs == status_unknown == 404
    assert body_theirs["error"].replace(theirs, "?") == body_unknown["error"].replace(unknown, "?")
    async with api.store.transaction() as tx:
        assert list(await tx.transcripts.for_call(theirs)) == []


# ---- validation ----------------------------------------------------------------------------


async def invalid(api: Api, action: str, body: object = None, **kw: Any) -> dict[str, str]:
    """Post to a live call of the receptionist, expect 400; the details by path."""
    call_id = await api.new_call()
    status, answer = await api.post(call_id, action, body, **kw)
    assert status == 400, answer
    assert answer["error"]
    return {d["path"]: d["message"] for d in answer["details"]}


async def test_a_missing_field_is_named(api: Api) -> None:
    assert await invalid(api, "handoff", {"reason": "caller_asked"}) == {
        "body.summary": "is required"
    }


async def test_a_value_outside_the_enum_lists_the_allowed_ones(api: Api) -> None:
    details = await invalid(api, "transcript", {"speaker": "agent", "text": "hi"})
    assert details == {"body.speaker": "must be one of caller, ai"}


async def test_an_extra_property_is_refused_by_name(api: Api) -> None:
    details = await invalid(api, "handoff", {"reason": "policy", "summary": "s", "urgent": True})
    assert details == {"body.urgent": "is not allowed here (allowed: priority, problem, reason, "
                                      "summary, topic)"}


async def test_a_too_long_text_says_how_long_without_echoing_it(api: Api) -> None:
    details = await invalid(api, "transcript", {"speaker": "caller", "text": "a" * 4001})
    assert details == {"body.text": "is 4001 characters long; at most 4000 are allowed"}


async def test_several_problems_are_reported_together(api: Api) -> None:
    details = await invalid(api, "handoff", {"reason": "bored", "summary": "",
                                              "topic": "Billing Stuff", "priority": "asap"})
    assert set(details) == {"body.reason", "body.summary", "body.topic", "body.priority"}
    assert "does not match" in details["body.topic"]


async def test_a_body_that_is_not_json_is_400(api: Api) -> None:
    details = await invalid(api, "transcript", data=b"speaker=ai&text=hi",
                            headers={**AUTH, "Content-Type": "application/json"})
    assert list(details) == ["body"]


async def test_a_body_that_is_not_an_object_is_400(api: Api) -> None:
    assert await invalid(api, "transcript", ["ai", "hi"]) == {
        "body": "['ai', 'hi'] is not of type 'object'"
    }


async def test_a_required_body_cannot_be_empty(api: Api) -> None:
    assert await invalid(api, "transcript", data=b" ") == {"body": "the body is empty"}


async def test_a_call_id_that_is_not_a_uuid_is_400(api: Api) -> None:
    status, body = await api.post("12", "transcript", {"speaker": "ai", "text": "hi"})
    assert status == 400
    assert [d["path"] for d in body["details"]] == ["path.call_id"]


async def test_a_body_over_64_kib_is_413(api: Api) -> None:
    call_id = await api.new_call()
    status, body = await api.post(call_id, "transcript", data=b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413 and "larger than" in body["error"]


async def test_a_chunked_body_over_64_kib_is_413_too(api: Api) -> None:
    call_id = await api.new_call()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * (MAX_BODY_BYTES // 4)

    status, _ = await api.post(call_id, "transcript", data=chunks())
    assert status == 413


async def test_unknown_routes_answer_in_json(api: Api) -> None:
    async with api.client.get(f"{API_PREFIX}/calls", headers=AUTH) as resp:
        assert resp.status == 404 and "error" in await resp.json()
    async with api.client.get(f"{API_PREFIX}/calls/x/end", headers=AUTH) as resp:
        assert resp.status == 405 and "error" in await resp.json()


# ---- call states ---------------------------------------------------------------------------


async def test_a_transcript_line_for_an_ended_call_is_409(api: Api) -> None:
    call_id = await api.new_call()
    async with api.store.transaction() as tx:
        await tx.calls.close(call_id, CallOutcome.COMPLETED_BY_AI)
    status, body = await api.post(call_id, "transcript", {"speaker": "ai", "text": "bye"})
    assert status == 409
    assert body == {"error": "cannot add to the transcript: the call has ended",
                    "state": "ended"}


async def test_a_second_handoff_while_one_is_open_is_409(api: Api) -> None:
    call_id = await api.new_call("receptionist", CallEvent.REQUEST_HANDOFF)
    status, body = await api.post(call_id, "handoff", {"reason": "caller_asked", "summary": "s"})
    assert status == 409 and body["state"] == "handoff_pending"
    assert "already open" in body["error"]
    assert api.commands.handoffs == []


async def test_a_handoff_or_hang_up_while_a_person_has_the_call_is_409(api: Api) -> None:
    call_id = await api.new_call("receptionist", CallEvent.REQUEST_HANDOFF,
                                 CallEvent.AGENT_CONNECTED)
    for action, body in (("handoff", {"reason": "caller_asked", "summary": "s"}),
                         ("end", {})):
        status, answer = await api.post(call_id, action, body)
        assert status == 409, action
        assert answer["state"] == "with_agent" and "a person has the call" in answer["error"]
    assert api.commands.ended == []


async def test_a_call_that_moved_on_under_the_request_is_409_not_500(api: Api) -> None:
    call_id = await api.new_call()
    api.commands.fail_with = InvalidTransition("call", CallState.HANDOFF_PENDING,
                                               CallEvent.REQUEST_HANDOFF)
    status, _ = await api.post(call_id, "handoff", {"reason": "policy", "summary": "s"})
    assert status == 409
    api.commands.fail_with = NotFound("call", call_id)
    status, _ = await api.post(call_id, "end")
    assert status == 409


# ---- what works ----------------------------------------------------------------------------


async def test_a_transcript_line_is_stored_and_shown_live(api: Api) -> None:
    call_id = await api.new_call()
    async with (api.hub.subscribe(call_topic(call_id)) as live,
                api.hub.subscribe(CALLS_TOPIC) as panels,
                api.hub.subscribe(TRANSCRIPTS_TOPIC) as board):
        status, body = await api.post(call_id, "transcript",
                                      {"speaker": "caller", "text": "[pressed 0]"})
        shown = await asyncio.wait_for(live.get(), 1)
        # The agent's call panel hears of it, and the supervisor board gets the line.
        pushed = await asyncio.wait_for(panels.get(), 1)
        assert CallChanged(call_id).to_dict().items() <= pushed.items()
        on_board = await asyncio.wait_for(board.get(), 1)
    assert {k: on_board[k] for k in ("type", "call_id", "speaker", "text")} == {
        "type": "transcript", "call_id": call_id, "speaker": "caller", "text": "[pressed 0]"}
    assert status == 201 and isinstance(body["id"], int)
    assert shown["type"] == "transcript" and shown["text"] == "[pressed 0]"
    async with api.store.transaction() as tx:
        (segment,) = await tx.transcripts.for_call(call_id)
    assert (segment.speaker, segment.text) == (Speaker.CALLER, "[pressed 0]")


async def test_a_handoff_request_opens_an_offered_handoff(api: Api) -> None:
    call_id = await api.new_call()
    status, body = await api.post(call_id, "handoff", {"reason": "caller_asked",
                                                       "summary": "wants a person"})
    assert status == 202 and body["state"] == "offered"
    assert api.commands.handoffs == [{"call_id": call_id, "reason": "caller_asked",
                                      "summary": "wants a person", "topic": None,
                                      "priority": "normal"}]
    async with api.store.transaction() as tx:
        assert (await tx.handoffs.get(body["handoff_id"])).call_id == call_id


async def test_the_ai_may_hang_up_with_a_reason_that_goes_into_the_transcript(api: Api) -> None:
    call_id = await api.new_call()
    status, body = await api.post(call_id, "end", {"reason": "caller said goodbye"})
    assert (status, body) == (202, {"call_id": call_id})
    assert api.commands.ended == [call_id]
    async with api.store.transaction() as tx:
        (segment,) = await tx.transcripts.for_call(call_id)
    assert segment.speaker is Speaker.SYSTEM and "caller said goodbye" in segment.text


async def test_ending_needs_no_body(api: Api) -> None:
    call_id = await api.new_call()
    async with api.client.post(f"{API_PREFIX}/calls/{call_id}/end", headers=AUTH) as resp:
        assert resp.status == 202
    assert api.commands.ended == [call_id]


# ---- events --------------------------------------------------------------------------------


async def test_the_events_stream_needs_the_token(api: Api) -> None:
    async with api.client.get(f"{API_PREFIX}/events") as resp:
        assert resp.status == 401


async def test_the_events_stream_carries_this_assistants_events_only(api: Api) -> None:
    mine = await api.new_call()
    await api.new_call("sales")
    async with api.client.ws_connect(f"{API_PREFIX}/events", headers=AUTH) as ws:
        ready = await ws.receive_json(timeout=2)
        assert ready == {"type": "ready", "assistant": "receptionist", "calls": [mine]}
        api.hub.publish(assistant_topic("sales"),
                        CallStarted("theirs", Caller("+2", ""), "balanced"))
        api.hub.publish(CARDS_TOPIC, Offered(mine, 1))
        api.hub.publish(assistant_topic("receptionist"),
                        CallStarted(mine, Caller("+1", ""), "balanced"))
        assert await ws.receive_json(timeout=2) == {
            "type": "call_started", "call_id": mine, "caller": {"number": "+1", "name": ""},
            "handoff_level": "balanced", "restricted_topics": [], "out_of_hours": False,
        }


async def test_returned_to_ai_carries_what_was_said_with_the_person(api: Api) -> None:
    call_id = await api.new_call()
    _, opened = await api.post(call_id, "handoff", {"reason": "caller_asked", "summary": "s"})
    async with api.store.transaction() as tx:
        await tx.transcripts.append(call_id, Speaker.AI, "connecting you")
        handoff = await tx.handoffs.get(opened["handoff_id"])
    agent_id = await new_agent(api.store)
    api.clock.advance(1)
    async with api.store.transaction() as tx:
        await tx.agents.set_duty(agent_id, True)
        await tx.handoffs.accept(handoff.id, agent_id)
        await tx.handoffs.apply(handoff.id, HandoffEvent.DIAL_AGENT)
        await tx.handoffs.apply(handoff.id, HandoffEvent.AGENT_ANSWERED)
    api.clock.advance(1)
    async with api.store.transaction() as tx:
        await tx.transcripts.append(call_id, Speaker.AGENT, "your refund is on its way")
    api.clock.advance(1)
    async with api.store.transaction() as tx:
        await tx.handoffs.apply(handoff.id, HandoffEvent.RETURN_TO_AI)
    api.clock.advance(1)
    async with api.store.transaction() as tx:
        await tx.transcripts.append(call_id, Speaker.AI, "back with me")

    async with api.client.ws_connect(f"{API_PREFIX}/events", headers=AUTH) as ws:
        await ws.receive_json(timeout=2)  # ready
        api.hub.publish(assistant_topic("receptionist"), ReturnedToAi(call_id))
        event = await ws.receive_json(timeout=2)
    assert event["type"] == "returned_to_ai"
    assert [(s["speaker"], s["text"]) for s in event["transcript"]] == [
        ("agent", "your refund is on its way")
    ]


async def test_a_slow_engine_is_told_how_many_events_it_lost(api: Api) -> None:
    async with api.client.ws_connect(f"{API_PREFIX}/events", headers=AUTH) as ws:
        await ws.receive_json(timeout=2)  # ready
        # Published without yielding: the stream's queue (256) overflows before it reads.
        for n in range(300):
            api.hub.publish(assistant_topic("receptionist"), CallEnded(str(n)))
        assert await ws.receive_json(timeout=2) == {"type": "overflow", "dropped": 44}
        assert (await ws.receive_json(timeout=2))["call_id"] == "44"


async def new_agent(store: Store) -> int:
    async with store.transaction() as tx:
        agent = await tx.agents.create(login="ada", display_name="Ada", sip_user="ada",
                                       sip_password="secret-secret")
    return agent.id


async def test_a_rotated_token_is_refused_at_once_and_closes_its_events_stream(
    api: Api,
) -> None:
    call_id = await api.new_call()
    async with api.client.ws_connect(f"{API_PREFIX}/events", headers=AUTH) as ws:
        await ws.receive_json(timeout=2)  # ready
        async with api.store.transaction() as tx:
            await tx.assistants.set_control_token_hash(
                api.assistants["receptionist"], hash_control_token("the new one"))
        async with api.client.post(f"{API_PREFIX}/calls/{call_id}/transcript", headers=AUTH,
                                   json={"speaker": "ai", "text": "hello"}) as resp:
            assert resp.status == 401
        # The open stream notices within TOKEN_CHECK_S (bounded wait, no fixed sleep).
        closing = await ws.receive(timeout=5 * TOKEN_CHECK_S)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == TOKEN_REVOKED


async def test_a_removed_assistants_token_opens_nothing(api: Api) -> None:
    async with api.store.transaction() as tx:
        await tx.assistants.remove(api.assistants["receptionist"])
    async with api.client.get(f"{API_PREFIX}/events", headers=AUTH) as resp:
        assert resp.status == 401


# ---- throttling (R23) ------------------------------------------------------------------------


async def test_wrong_tokens_from_one_address_are_throttled_but_its_other_engines_keep_working(
    api: Api,
) -> None:
    """Two engines on one host share its address: one retrying a stale token gets 429
    (with Retry-After), on the commands and the events socket's handshake alike; the
    other's valid token still works, on both."""
    call_id = await api.new_call()
    stale = {"Authorization": "Bearer a-token-rotated-away"}
    line = {"speaker": "ai", "text": "hi"}
    for _ in range(TOKEN_FAILURES):
        status, _ = await api.post(call_id, "transcript", line, headers=stale)
        assert status == 401
    async with api.client.post(f"{API_PREFIX}/calls/{call_id}/transcript", json=line,
                               headers=stale) as resp:
        assert resp.status == 429
        assert 0 < int(resp.headers["Retry-After"]) <= TOKEN_WINDOW_S
        assert "too many wrong tokens" in (await resp.json())["error"]
    async with api.client.get(f"{API_PREFIX}/events", headers=stale) as resp:
        assert resp.status == 429
    status, _ = await api.post(call_id, "transcript", line)
    assert status == 201
    async with api.client.ws_connect(f"{API_PREFIX}/events", headers=AUTH) as ws:
        assert (await ws.receive_json(timeout=2))["type"] == "ready"
    # The sales engine had not spoken before the block; its token is valid all the same.
    sales_call = await api.new_call("sales")
    status, _ = await api.post(sales_call, "transcript", line,
                               headers={"Authorization": f"Bearer {SALES_TOKEN}"})
    assert status == 201
