"""Handoff levels and restricted topics (handoff.policy, handoff.topics): the matching
on its own, then each level and each kind of topic through the AI control API, with a
real SQLite store and a fake call controller (the real Asterisk is in
tests/integration/test_handoff_policy.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from handoff.assistants import FallbackKind, HandoffLevel
from handoff.calls import CallEvent, CallState
from handoff.policy import MIN_PROBLEM_CHARS, HandoffRefused, Refusal, decide
from handoff.topics import BadTopics, Hit, Topic, check_topics, find_topic, words
from tests.ai_api_fixtures import Api
from web.ai_api import SPEC_PATH

BILLING = Topic("billing", ("billing dispute", "refund"))
PLAINTE = Topic("plainte", ("réclamation", "mise en demeure"))
TOPICS = [BILLING, PLAINTE]


# ---- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(("said", "hit"), [
    ("I have a billing dispute with you", Hit("billing", "billing dispute")),
    ("BILLING DISPUTE!!", Hit("billing", "billing dispute")),
    ("a billing-dispute, again", Hit("billing", "billing dispute")),
    ("I want a refund.", Hit("billing", "refund")),
    ("RECLAMATION", Hit("plainte", "réclamation")),
    ("Je fais une Réclamation", Hit("plainte", "réclamation")),
    ("une MISE EN DÉMEURE", Hit("plainte", "mise en demeure")),
    # Whole words only: a phrase inside a longer word, or split up, is not said.
    ("the refunds department", None),
    ("a billing question about a dispute", None),
    ("reclamations", None),
    ("", None),
])
def test_a_phrase_matches_whole_words_ignoring_case_and_accents(said: str, hit: Hit | None) -> None:
    assert find_topic(TOPICS, said) == hit


def test_a_short_word_does_not_match_inside_a_longer_one() -> None:
    assert find_topic([Topic("billing", ("bill",))], "my billing address") is None
    assert find_topic([Topic("billing", ("bill",))], "my bill, please") == Hit("billing", "bill")


def test_the_first_topic_in_the_admins_order_wins_whatever_is_said_first() -> None:
    said = "réclamation about a refund"
    assert find_topic(TOPICS, said) == Hit("billing", "refund")
    assert find_topic([PLAINTE, BILLING], said) == Hit("plainte", "réclamation")


def test_words_are_folded_and_stripped_of_accents() -> None:
    assert words("Straße Ça-va ÉTÉ") == ("strasse", "ca", "va", "ete")


def test_an_admins_topics_are_checked() -> None:
    assert check_topics([{"name": "billing", "phrases": [" refund ", "refund", "bills"]}]) \
        == [Topic("billing", ("refund", "bills"))]
    for bad, why in (([{"name": "Billing", "phrases": ["x"]}], "a topic's name"),
                     ([{"name": "b", "phrases": []}], "needs 1 to 50 phrases"),
                     ([{"name": "b", "phrases": ["..."]}], "is not a phrase"),
                     ([{"name": "b", "phrases": [3]}], "is not a phrase"),
                     ([{"name": "b", "phrases": ["x"]}, {"name": "b", "phrases": ["y"]}],
                      "given twice"),
                     ({"name": "b"}, "a list")):
        with pytest.raises(BadTopics, match=why):
            check_topics(bad)


# ---- levels, decided -----------------------------------------------------------------------


def _decide(level: HandoffLevel, **given: Any) -> str:
    ask: dict[str, Any] = {"reason": "caller_asked", "summary": "Wants a person.",
                           "topic": None, "priority": "normal", "problem": None, **given}
    return decide(level, TOPICS, **ask).reason


def _refusal(level: HandoffLevel, **given: Any) -> Refusal:
    with pytest.raises(HandoffRefused) as refused:
        _decide(level, **given)
    return refused.value.code


def test_ai_only_refuses_all_but_an_emergency_or_a_restricted_topic() -> None:
    assert _refusal(HandoffLevel.AI_ONLY) is Refusal.NOT_ALLOWED
    assert _refusal(HandoffLevel.AI_ONLY, topic="sales") is Refusal.NOT_ALLOWED
    assert _refusal(HandoffLevel.AI_ONLY, problem="x" * 100) is Refusal.NOT_ALLOWED
    # Claiming the reason does not make a topic restricted.
    assert _refusal(HandoffLevel.AI_ONLY, reason="restricted_topic") is Refusal.NOT_ALLOWED
    assert _decide(HandoffLevel.AI_ONLY, priority="emergency") == "caller_asked"
    assert _decide(HandoffLevel.AI_ONLY, topic="billing") == "restricted_topic"


@pytest.mark.parametrize("level", [HandoffLevel.QUICK, HandoffLevel.BALANCED])
def test_quick_and_balanced_let_any_request_through(level: HandoffLevel) -> None:
    assert _decide(level, summary="?") == "caller_asked"
    assert _decide(level, topic="billing") == "restricted_topic"


def test_ai_first_wants_a_problem_statement() -> None:
    assert _refusal(HandoffLevel.AI_FIRST) is Refusal.PROBLEM_REQUIRED
    assert _refusal(HandoffLevel.AI_FIRST, problem="  ",
                    summary="x" * (MIN_PROBLEM_CHARS - 1)) is Refusal.PROBLEM_REQUIRED
    assert _decide(HandoffLevel.AI_FIRST, problem="A double charge in May") == "caller_asked"
    assert _decide(HandoffLevel.AI_FIRST, summary="x" * MIN_PROBLEM_CHARS) == "caller_asked"
    assert _decide(HandoffLevel.AI_FIRST, priority="emergency") == "caller_asked"
    assert _decide(HandoffLevel.AI_FIRST, topic="plainte") == "restricted_topic"


# ---- through the API -----------------------------------------------------------------------


async def _rules(api: Api, level: HandoffLevel, topics: list[Topic] = TOPICS) -> None:
    async with api.store.transaction() as tx:
        receptionist = api.assistants["receptionist"]
        await tx.assistants.set_handoff_rules(
            receptionist, handoff_level=level, accept_timeout_s=30,
            fallback_kind=FallbackKind.AI_CALLBACK, fallback_number=None)
        await tx.assistants.set_restricted_topics(receptionist, topics)


def _error_schema() -> Any:
    document = json.loads(SPEC_PATH.read_text())
    registry: Registry[Any] = Registry().with_resource(
        "urn:t", DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": "urn:t#/components/schemas/Error"}, registry=registry)


async def _policy_audit(api: Api) -> list[dict[str, Any]]:
    async with api.store.transaction() as tx:
        return [e.detail | {"subject": e.subject} for e in await tx.audit.recent()
                if (e.actor, e.action) == ("policy", "restricted_topic")]


async def test_an_ai_only_engine_is_told_why_no_person_comes(api: Api) -> None:
    await _rules(api, HandoffLevel.AI_ONLY)
    call_id = await api.new_call()
    status, body = await api.post(call_id, "handoff",
                                  {"reason": "caller_asked", "summary": "Wants a person."})
    assert status == 422
    assert body["code"] == "handoff_not_allowed" and body["handoff_level"] == "ai_only"
    assert "billing, plainte" in body["error"] and "emergency" in body["error"]
    _error_schema().validate(body)
    assert api.commands.handoffs == []
    async with api.store.transaction() as tx:
        assert (await tx.calls.get(call_id)).state is CallState.WITH_AI

    status, body = await api.post(call_id, "handoff", {
        "reason": "caller_asked", "summary": "Chest pain.", "priority": "emergency"})
    assert status == 202
    assert api.commands.handoffs[-1]["priority"] == "emergency"


async def test_a_restricted_topic_the_engine_reports_gets_a_person_under_ai_only(
    api: Api,
) -> None:
    await _rules(api, HandoffLevel.AI_ONLY)
    call_id = await api.new_call()
    status, body = await api.post(call_id, "handoff", {
        "reason": "caller_asked", "summary": "Disputes an invoice.", "topic": "billing"})
    assert status == 202
    (asked,) = api.commands.handoffs
    assert (asked["reason"], asked["topic"]) == ("restricted_topic", "billing")
    assert await _policy_audit(api) == [{
        "subject": f"call:{call_id}", "assistant": "receptionist", "topic": "billing",
        "source": "engine", "handoff_id": body["handoff_id"], "level": "ai_only"}]


async def test_an_ai_first_engine_is_told_to_ask_the_caller_first(api: Api) -> None:
    await _rules(api, HandoffLevel.AI_FIRST)
    call_id = await api.new_call()
    status, body = await api.post(call_id, "handoff",
                                  {"reason": "caller_asked", "summary": "Wants a person."})
    assert status == 422 and body["code"] == "problem_required"
    assert "ask the caller" in body["error"] and "`problem`" in body["error"]
    status, _ = await api.post(call_id, "handoff", {
        "reason": "ai_cannot_help", "summary": "Wants a person.",
        "problem": "Charged twice for the May invoice"})
    assert status == 202
    # The card carries what the AI established.
    assert api.commands.handoffs[-1]["summary"] == (
        "Wants a person. Problem: Charged twice for the May invoice")


@pytest.mark.parametrize("level", [HandoffLevel.QUICK, HandoffLevel.BALANCED])
async def test_quick_and_balanced_engines_get_a_person_at_once(
    api: Api, level: HandoffLevel,
) -> None:
    await _rules(api, level)
    call_id = await api.new_call()
    status, _ = await api.post(call_id, "handoff", {"reason": "caller_asked", "summary": "?"})
    assert status == 202 and api.commands.handoffs[-1]["reason"] == "caller_asked"


async def test_a_callers_line_on_a_restricted_topic_brings_a_person_whatever_the_level(
    api: Api,
) -> None:
    await _rules(api, HandoffLevel.AI_ONLY)
    call_id = await api.new_call()
    # The AI's own words, and a caller's that only come close, change nothing.
    for speaker, text in (("ai", "Is this a billing dispute?"),
                          ("caller", "It is about refunds in general")):
        status, body = await api.post(call_id, "transcript", {"speaker": speaker, "text": text})
        assert status == 201 and "restricted_topic" not in body
    assert api.commands.handoffs == []

    status, body = await api.post(call_id, "transcript",
                                  {"speaker": "caller", "text": "Je fais une RÉCLAMATION."})
    assert status == 201
    (asked,) = api.commands.handoffs
    assert body["restricted_topic"] == {"topic": "plainte", "handoff_id": 1}
    assert (asked["reason"], asked["topic"]) == ("restricted_topic", "plainte")
    assert '"réclamation"' in asked["summary"]
    assert await _policy_audit(api) == [{
        "subject": f"call:{call_id}", "assistant": "receptionist", "topic": "plainte",
        "phrase": "réclamation", "source": "caller", "handoff_id": 1, "level": "ai_only"}]

    # A person is already being asked for: the next line opens nothing more.
    status, body = await api.post(call_id, "transcript",
                                  {"speaker": "caller", "text": "a refund, please"})
    assert status == 201 and "restricted_topic" not in body
    assert len(api.commands.handoffs) == 1


async def test_topics_are_read_fresh_so_an_admins_change_applies_to_the_next_line(
    api: Api,
) -> None:
    await _rules(api, HandoffLevel.BALANCED, topics=[])
    call_id = await api.new_call()
    status, body = await api.post(call_id, "transcript",
                                  {"speaker": "caller", "text": "a billing dispute"})
    assert status == 201 and "restricted_topic" not in body
    await _rules(api, HandoffLevel.BALANCED)
    _, body = await api.post(call_id, "transcript",
                                  {"speaker": "caller", "text": "a billing dispute"})
    assert body["restricted_topic"]["topic"] == "billing"


async def test_a_line_while_a_person_has_the_call_forces_nothing(api: Api) -> None:
    await _rules(api, HandoffLevel.AI_ONLY)
    call_id = await api.new_call("receptionist", CallEvent.REQUEST_HANDOFF,
                                 CallEvent.AGENT_CONNECTED)
    status, body = await api.post(call_id, "transcript",
                                  {"speaker": "caller", "text": "a billing dispute"})
    assert status == 201 and "restricted_topic" not in body
    assert api.commands.handoffs == [] and await _policy_audit(api) == []
