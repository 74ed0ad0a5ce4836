"""A past call's parts, transcript offsets and quality record, as its recording page
shows them (web.dashboard.call_record)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handoff.calls import CallDirection, Speaker
from handoff.store.models import Call, Handoff, LegQualityRecord, TranscriptSegment
from web.dashboard.call_record import Part, lines_of, parts_of, quality_of

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NAMES = {1: "Ada", 2: "Bob", 3: "Sam"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def call(ended: float) -> Call:
    return Call(id="c", started_at=at(-2), answered_at=at(0), ended_at=at(ended))


def person(agent: int, start: float, end: float, reason: str = "caller_request",
           handoff_id: int = 1) -> Handoff:
    return Handoff(id=handoff_id, reason=reason, accepted_by=agent, offered_at=at(start - 5),
                   accepted_at=at(start - 1), media_at=at(start - 0.9),
                   connected_at=at(start), ended_at=at(end))


def marks(parts: list[Part]) -> list[tuple[str, float, float, str]]:
    return [(p.who, p.start_s, p.end_s, p.mark) for p in parts]


def test_an_ai_call_is_one_ai_part() -> None:
    assert marks(parts_of(call(30), [], NAMES)) == [("ai", 0, 30, "The AI answers")]


def test_a_handover_a_return_to_the_ai_and_a_second_handover_are_five_parts() -> None:
    handoffs = [person(1, 10, 20), person(2, 30, 40, handoff_id=2)]
    assert marks(parts_of(call(45), handoffs, NAMES)) == [
        ("ai", 0, 10, "The AI answers"),
        ("person", 10, 20, "Ada answers"),
        ("ai", 20, 30, "Back to the AI"),
        ("person", 30, 40, "Bob answers"),
        ("ai", 40, 45, "Back to the AI"),
    ]


def test_a_transfer_and_a_take_over_follow_on_without_the_ai_between() -> None:
    handoffs = [person(1, 10, 20), person(2, 20.2, 30, "transfer", 2),
                person(3, 30, 50, "supervisor", 3)]
    assert marks(parts_of(call(50), handoffs, NAMES)) == [
        ("ai", 0, 10, "The AI answers"),
        ("person", 10, 20, "Ada answers"),
        ("person", 20.2, 30, "Transferred to Bob"),
        ("person", 30, 50, "Sam takes over"),
    ]


def test_a_call_back_answered_at_once_has_no_ai_part() -> None:
    assert marks(parts_of(call(20), [person(1, 0.3, 20)], NAMES)) == [
        ("person", 0.3, 20, "Ada answers")]


def test_attempts_that_never_reached_a_person_make_no_part() -> None:
    failed = Handoff(id=9, reason="caller_request", offered_at=at(3), ended_at=at(8))
    assert marks(parts_of(call(12), [failed], NAMES)) == [("ai", 0, 12, "The AI answers")]


def test_each_transcript_line_falls_where_it_was_said_in_the_recording() -> None:
    segments = [TranscriptSegment(at=at(1.5), speaker=Speaker.AI, text="Hello"),
                TranscriptSegment(at=at(-1), speaker=Speaker.SYSTEM, text="Ringing")]
    assert lines_of(call(10), segments) == [
        {"at_s": 1.5, "speaker": "ai", "text": "Hello"},
        {"at_s": 0.0, "speaker": "system", "text": "Ringing"},  # before the answer: 0
    ]


def test_a_handoffs_quality_has_its_times_and_its_agents_line() -> None:
    legs = [LegQualityRecord(leg="caller", handoff_id=None, packets_received=900,
                             jitter_ms=1.2, jitter_max_ms=3.0, loss_pct=0.0, rtt_ms=5.0,
                             far_jitter_ms=1.0, far_loss_pct=0.0),
            LegQualityRecord(leg="agent", handoff_id=1, packets_received=500,
                             jitter_ms=0.8, jitter_max_ms=4.0, loss_pct=0.5, rtt_ms=None,
                             far_jitter_ms=None, far_loss_pct=None)]
    quality = quality_of([person(1, 10, 20)], legs, NAMES)
    (handoff,) = quality["handoffs"]
    assert (handoff["agent"], handoff["accept_s"], handoff["connect_s"]) == ("Ada", 4.0, 0.1)
    assert handoff["leg"]["who"] == "Ada's line"
    assert handoff["leg"]["rtt_ms"] is None
    assert handoff["leg"]["why_absent"].startswith("no RTCP report from the far end")
    assert quality["caller"]["rtt_ms"] == 5.0 and quality["caller"]["why_absent"] is None


def test_a_call_backs_recording_counts_from_its_start_while_the_phones_ring() -> None:
    back = Call(id="c", started_at=at(-10), answered_at=at(0), ended_at=at(20),
                direction=CallDirection.OUTBOUND)
    line = TranscriptSegment(at=at(1), speaker=Speaker.AGENT, text="Hello, it's Ada")
    assert lines_of(back, [line])[0]["at_s"] == 11.0
