"""A past call as its recording and history pages show it: who had the caller when
(the AI's parts and each person's, with the handovers, transfers and returns between
them), where each transcript line falls in the recording, and each handoff's quality
record.

Times in the recording count from the call's answer: the call bridge starts recording
as the caller joins it, a few milliseconds before the ledger notes the answer. A person's
part starts when the ledger says they have the caller (the AI has left) and ends with
their handoff; a part that is not a person's is the AI's (or hold music).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from handoff.calls import CallDirection
from handoff.store.models import Call, Handoff, LegQualityRecord, TranscriptSegment
from handoff.store.quality_repo import AGENT, CALLER, figures_of

# Handoff reasons that are not an AI's handing over (handoff.live.transfer, supervision).
TRANSFER_REASON = "transfer"
TAKE_OVER_REASON = "supervisor"
# Two parts closer than this are one change of hands, not the AI in between.
SAME_MOMENT_S = 1.0


@dataclass(frozen=True, slots=True)
class Part:
    who: str  # "ai" or "person"
    name: str  # "AI", or the person's name
    start_s: float
    end_s: float
    # How this part began, in words: "Ada answers", "Transferred to Bob", "Back to the AI".
    mark: str


def _offset(moment: datetime, zero: datetime) -> float:
    return max(0.0, round((moment - zero).total_seconds(), 2))


def recording_zero(call: Call) -> datetime:
    """Where the recording starts: an inbound call's bridge records from the answer; a
    call-back's from its start, while the agent's phone and then the caller's ring."""
    if call.direction is CallDirection.OUTBOUND:
        return call.started_at
    return call.answered_at or call.started_at


def parts_of(call: Call, handoffs: Sequence[Handoff], names: Mapping[int, str]) -> list[Part]:
    """The call's parts in order, from its answer to its end (the recording's length)."""
    zero = recording_zero(call)
    end = _offset(call.ended_at, zero) if call.ended_at else None
    people = [h for h in handoffs if h.connected_at is not None]
    parts: list[Part] = []
    at = 0.0
    for handoff in people:
        assert handoff.connected_at is not None
        # A transfer's first agent talks until the colleague's voice flows: the
        # colleague's part starts where theirs ends, not before.
        start = max(_offset(handoff.connected_at, zero), at)
        stop = _offset(handoff.ended_at, zero) if handoff.ended_at else end
        name = names.get(handoff.accepted_by or -1, "someone")
        if start - at >= SAME_MOMENT_S:
            parts.append(Part("ai", "AI", at, start,
                              "Back to the AI" if parts else "The AI answers"))
        mark = (f"Transferred to {name}" if handoff.reason == TRANSFER_REASON
                else f"{name} takes over" if handoff.reason == TAKE_OVER_REASON
                else f"{name} answers")
        parts.append(Part("person", name, start, stop if stop is not None else start, mark))
        at = parts[-1].end_s
    if end is not None and (end - at >= SAME_MOMENT_S or not parts):
        parts.append(Part("ai", "AI", at, end, "The AI answers" if not parts
                          else "Back to the AI"))
    return parts


def lines_of(call: Call, segments: Sequence[TranscriptSegment]) -> list[dict[str, Any]]:
    """Transcript lines with where each falls in the recording (seconds)."""
    zero = recording_zero(call)
    return [{"at_s": _offset(s.at, zero), "speaker": s.speaker.value, "text": s.text}
            for s in segments]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _leg(row: LegQualityRecord, who: str) -> dict[str, Any]:
    figures = figures_of(row)
    return {"leg": row.leg, "who": who, **asdict(figures), "why_absent": figures.why_absent}


def quality_of(handoffs: Sequence[Handoff], legs: Sequence[LegQualityRecord],
               names: Mapping[int, str]) -> dict[str, Any]:
    """Each handoff that reached an agent: time to accept, connect time (the accept to
    the agent's audio at Asterisk), and their leg's figures; and the caller's leg."""
    by_handoff = {row.handoff_id: row for row in legs if row.leg == AGENT}
    caller = next((row for row in legs if row.leg == CALLER), None)
    handoffs_out = []
    for handoff in handoffs:
        if handoff.accepted_at is None:
            continue
        name = names.get(handoff.accepted_by or -1, "someone")
        row = by_handoff.get(handoff.id)
        handoffs_out.append({
            "id": handoff.id,
            "agent": name,
            "accept_s": _seconds(handoff.offered_at, handoff.accepted_at),
            "connect_s": _seconds(handoff.accepted_at, handoff.media_at),
            "leg": _leg(row, f"{name}'s line") if row is not None else None,
        })
    return {"handoffs": handoffs_out,
            "caller": _leg(caller, "Caller's line") if caller is not None else None}


def parts_json(parts: Sequence[Part]) -> list[dict[str, Any]]:
    return [asdict(p) for p in parts]
