"""Handoff levels and restricted topics on real Asterisk: the carrier's caller reaches an
AI-only assistant whose engine (written as a third party would) reports the caller's
words; the server itself hands the call to Ada's desk phone when they name a
restricted topic, and the caller hears her."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.assistants import FallbackKind, HandoffLevel
from handoff.calls import CallState
from handoff.handoffs import HandoffState
from handoff.topics import Topic
from tests.integration.ai_rig import ASSISTANT, AiRig, ai_rig
from tests.integration.asterisk_helpers import Pair
from tests.integration.test_ai_api import engine_of, start_engine
from tests.waiting import until

pytestmark = pytest.mark.integration

BILLING = Topic("billing", ("billing dispute", "refund"))


@pytest_asyncio.fixture
async def ai_only(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[AiRig]:
    """The receptionist's number answered by an AI-only assistant with a billing topic."""
    async with ai_rig(quiet_pair, tmp_path / "switchboard.db", start_engine) as r:
        async with r.store.transaction() as tx:
            assistant = await tx.assistants.by_name(ASSISTANT)
            assert assistant is not None
            await tx.assistants.set_handoff_rules(
                assistant.id, handoff_level=HandoffLevel.AI_ONLY, accept_timeout_s=30,
                fallback_kind=FallbackKind.AI_CALLBACK, fallback_number=None)
            await tx.assistants.set_restricted_topics(assistant.id, [BILLING])
        yield r


async def _handoffs(r: AiRig, call_id: str) -> list[tuple[HandoffState, str, str | None]]:
    async with r.store.transaction() as tx:
        return [(h.state, h.reason, h.topic) for h in await tx.handoffs.for_call(call_id)]


async def _offered(r: AiRig, call_id: str) -> bool:
    return [h[0] for h in await _handoffs(r, call_id)] == [HandoffState.OFFERED]


async def test_a_billing_dispute_raised_by_the_caller_under_ai_only_brings_a_person(
    ai_only: AiRig,
) -> None:
    r, engine = ai_only, engine_of(ai_only)
    placed = await r.place_call()
    started = await engine.next_event()
    assert (started["type"], started["handoff_level"], started["restricted_topics"]) == (
        "call_started", "ai_only", ["billing"])

    # The AI alone may not hand the caller over, and is told why.
    status, body = await engine.post(placed.call_id, "handoff",
                                     {"reason": "caller_asked", "summary": "Wants a person."})
    assert (status, body["code"]) == (422, "handoff_not_allowed")
    assert await r.call_state_is(placed.call_id, CallState.WITH_AI)

    # What the caller says, as the engine heard it, is enough: the server asks itself.
    status, body = await engine.post(placed.call_id, "transcript", {
        "speaker": "caller", "text": "I want to open a Billing Dispute about May."})
    assert status == 201
    handoff_id = body["restricted_topic"]["handoff_id"]
    assert body["restricted_topic"]["topic"] == "billing"
    await until(lambda: _offered(r, placed.call_id))
    assert await _handoffs(r, placed.call_id) == [
        (HandoffState.OFFERED, "restricted_topic", "billing")]

    asked = time.monotonic()
    await r.control.accept(handoff_id, r.agent_id)
    assert (await engine.next_event())["type"] == "handoff_connected"
    await r.wait_hears(placed, "agent", after=asked)  # the caller talks to Ada now
    async with r.store.transaction() as tx:
        (rule,) = [e for e in await tx.audit.recent() if e.actor == "policy"]
    assert (rule.action, rule.subject) == ("restricted_topic", f"call:{placed.call_id}")
    assert (rule.detail["topic"], rule.detail["phrase"], rule.detail["source"]) == (
        "billing", "billing dispute", "caller")
    await r.hang_up(placed)


async def test_a_restricted_topic_reported_by_the_engine_gets_a_person_under_ai_only(
    ai_only: AiRig,
) -> None:
    r, engine = ai_only, engine_of(ai_only)
    placed = await r.place_call()
    await engine.next_event()  # call_started
    status, body = await engine.post(placed.call_id, "handoff", {
        "reason": "ai_cannot_help", "summary": "Disputes an invoice.", "topic": "billing"})
    assert status == 202 and body["state"] == "offered"
    assert await _handoffs(r, placed.call_id) == [
        (HandoffState.OFFERED, "restricted_topic", "billing")]
    async with r.store.transaction() as tx:
        (rule,) = [e for e in await tx.audit.recent() if e.actor == "policy"]
    assert (rule.detail["topic"], rule.detail["source"]) == ("billing", "engine")
    await r.hang_up(placed)
