"""Handoff policy: what an assistant's handoff level lets its engine ask for, and the
restricted topics on which the server itself asks for a person.

The engine decides when to ask; the server decides what it can decide alone:

- ``ai_only``: the engine's requests are refused, except an emergency (priority
  ``emergency``) or a restricted topic;
- ``quick`` and ``balanced``: every request goes through at once (the two differ only in
  the engine's prompt, which learns the level from ``call_started``);
- ``ai_first``: a request needs a problem statement (``problem``, or a summary of at
  least :data:`MIN_PROBLEM_CHARS` characters), else the engine is told to ask the
  caller first.

A restricted topic (a name and its phrases) forces a person whatever the level and
whatever the AI says: reported by the engine as a handoff request's ``topic``, or heard
in a caller's transcript line. Phrases match whole words, deterministically, ignoring
case and accents ("réclamation" matches "RECLAMATION").
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from handoff.assistants import HandoffLevel
from handoff.calls import CallState
from handoff.live.errors import CallStateConflict, OutOfHours
from handoff.states import InvalidTransition
from handoff.store import NotFound, Store
from handoff.store.models import Assistant
from handoff.topics import Hit, Topic, find_topic, topics_of

log = logging.getLogger(__name__)

# The reason a handoff forced by a restricted topic carries (what the card shows).
RESTRICTED_TOPIC = "restricted_topic"
# The priority that signals an emergency: a person is asked for whatever the level.
EMERGENCY = "emergency"
# AI first: a summary this long (about one sentence: who calls and what about) counts
# as a problem statement; "the caller wants a person" does not.
MIN_PROBLEM_CHARS = 60
# Who the audit log names for what the policy did on its own.
POLICY_ACTOR = "policy"



class Refusal(enum.StrEnum):
    """Why the server refused an engine's handoff request (the API's error ``code``)."""

    # The assistant is AI only: no person for this call unless a topic or emergency.
    NOT_ALLOWED = "handoff_not_allowed"
    # The assistant is AI first: ask the caller what the call is about first.
    PROBLEM_REQUIRED = "problem_required"
    # Out of the assistant's business hours nobody can come; its fallback applies.
    OUT_OF_HOURS = "out_of_hours"


class HandoffRefused(Exception):
    def __init__(self, code: Refusal, message: str, level: HandoffLevel) -> None:
        super().__init__(message)
        self.code, self.message, self.level = code, message, level


# ---- the engine's requests -----------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A request the policy lets through: the reason the handoff carries, and the
    restricted topic behind it, if one is."""

    reason: str
    hit: Hit | None = None


def decide(
    level: HandoffLevel, topics: Sequence[Topic], *, reason: str, summary: str,
    topic: str | None, priority: str, problem: str | None,
) -> Decision:
    """Whether an engine's handoff request goes through under ``level``; raises
    HandoffRefused with a reason the engine can act on if not."""
    if topic is not None and any(t.name == topic for t in topics):
        return Decision(RESTRICTED_TOPIC, Hit(topic))
    if priority == EMERGENCY:
        return Decision(reason)
    names = ", ".join(t.name for t in topics) or "none"
    if level is HandoffLevel.AI_ONLY:
        raise HandoffRefused(Refusal.NOT_ALLOWED, (
            "this assistant is AI only: keep helping the caller yourself. A person is "
            f"asked for only on a restricted topic (send it as `topic`; this assistant's: "
            f"{names}) or an emergency (priority \"emergency\")"), level)
    if level is HandoffLevel.AI_FIRST and not (problem or "").strip() \
            and len(summary.strip()) < MIN_PROBLEM_CHARS:
        raise HandoffRefused(Refusal.PROBLEM_REQUIRED, (
            "this assistant is AI first: ask the caller what the call is about and try to "
            "help; if a person is still needed, ask again with `problem` (what the caller "
            f"needs) or a summary of at least {MIN_PROBLEM_CHARS} characters"), level)
    return Decision(reason)


def with_problem(summary: str, problem: str | None) -> str:
    """What the card shows: the summary, and the problem the AI established."""
    problem = (problem or "").strip()
    return f"{summary} Problem: {problem}" if problem else summary


class AsksForPerson(Protocol):
    """What the policy needs of the live-call controller (CallControl fits as is)."""

    async def request_handoff(
        self, call_id: str, *, reason: str, summary: str, topic: str | None = None,
        priority: str = "normal",
    ) -> int: ...


@dataclass(frozen=True)
class Forced:
    """A handoff the server opened on its own."""

    handoff_id: int
    hit: Hit


class HandoffPolicy:
    """Stands between an assistant's engine and the controller: the engine's requests
    pass its level, and what the caller says is matched against its restricted topics.
    The controller's own handoffs (the AI failed, a re-offer) do not pass here."""

    def __init__(self, store: Store, commands: AsksForPerson) -> None:
        self.store = store
        self.commands = commands

    async def engine_asks(
        self, assistant: Assistant, call_id: str, *, reason: str, summary: str,
        topic: str | None = None, priority: str = "normal", problem: str | None = None,
    ) -> int:
        decision = decide(assistant.handoff_level, topics_of(assistant), reason=reason,
                          summary=summary, topic=topic, priority=priority, problem=problem)
        handoff_id = await self.commands.request_handoff(
            call_id, reason=decision.reason, summary=with_problem(summary, problem),
            topic=topic, priority=priority)
        if decision.hit is not None:
            await self._audit(assistant, call_id, handoff_id, decision.hit, "engine")
        return handoff_id

    async def caller_said(self, assistant: Assistant, call_id: str, text: str) -> Forced | None:
        """A caller's line: on a restricted topic's phrase, a person is asked for now, with
        reason ``restricted_topic``, unless one already is or has the call."""
        hit = find_topic(topics_of(assistant), text)
        if hit is None:
            return None
        async with self.store.transaction() as tx:
            state = (await tx.calls.get(call_id)).state
        if state is not CallState.WITH_AI:
            log.info("call=%s: caller spoke of restricted topic %s; the call is %s, no new "
                     "handoff", call_id, hit.topic, state.value)
            return None
        summary = (f"The caller spoke of \"{hit.phrase}\": topic {hit.topic} is restricted, "
                   "a person must take this call.")
        try:
            handoff_id = await self.commands.request_handoff(
                call_id, reason=RESTRICTED_TOPIC, summary=summary, topic=hit.topic)
        except (NotFound, InvalidTransition, CallStateConflict):
            # The call moved on meanwhile (it ended, or a handoff opened): nothing to force.
            return None
        except OutOfHours:
            log.info("call=%s: caller spoke of restricted topic %s out of hours: the "
                     "assistant's fallback applies", call_id, hit.topic)
            return None
        await self._audit(assistant, call_id, handoff_id, hit, "caller")
        log.info("call=%s handoff=%s forced: caller said %r (restricted topic %s)",
                 call_id, handoff_id, hit.phrase, hit.topic)
        return Forced(handoff_id, hit)

    async def _audit(self, assistant: Assistant, call_id: str, handoff_id: int, hit: Hit,
                     source: str) -> None:
        detail: dict[str, Any] = {"assistant": assistant.name, "topic": hit.topic,
                                  "source": source, "handoff_id": handoff_id,
                                  "level": assistant.handoff_level.value}
        if hit.phrase is not None:
            detail["phrase"] = hit.phrase
        async with self.store.transaction() as tx:
            await tx.audit.record(POLICY_ACTOR, RESTRICTED_TOPIC, f"call:{call_id}", detail)
