from __future__ import annotations

import enum
import logging
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from handoff.callback import CALLBACK, Callback, CallbackEvent, CallbackState
from handoff.calls import CALL_LIFECYCLE, CallEvent, CallState
from handoff.handoffs import (
    HANDOFF_LIFECYCLE,
    HandoffEvent,
    HandoffState,
    handoff_priority,
    reoffer_level,
    urgency,
)
from handoff.states import InvalidTransition, StateMachine
from handoff.store.models import Transition
from handoff.store.transitions import history_errors

CALL_ID = "9b2f6c1e-call"


class Door(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    LOCKED = "locked"


class Push(enum.StrEnum):
    CLOSE = "close"
    OPEN = "open"
    LOCK = "lock"


DOOR: StateMachine[Door, Push] = StateMachine(
    "door",
    Door.OPEN,
    {
        (Door.OPEN, Push.CLOSE): Door.CLOSED,
        (Door.CLOSED, Push.OPEN): Door.OPEN,
        (Door.CLOSED, Push.LOCK): Door.LOCKED,
    },
)


S = TypeVar("S", bound=enum.StrEnum)
E = TypeVar("E", bound=enum.StrEnum)


def walk(machine: StateMachine[S, E], *events: E) -> S:
    state = machine.initial
    for event in events:
        state = machine.transition(state, event, call_id=CALL_ID)
    return state


def reachable(machine: StateMachine[S, E]) -> set[S]:
    seen: set[S] = set()
    frontier = [machine.initial]
    while frontier:
        state = frontier.pop()
        if state not in seen:
            seen.add(state)
            frontier.extend(machine.next_state(state, ev) for ev in machine.events_from(state))
    return seen


def test_a_transition_returns_the_next_state() -> None:
    assert DOOR.transition(Door.OPEN, Push.CLOSE, call_id=CALL_ID) is Door.CLOSED


def test_an_invalid_transition_raises_naming_state_and_event() -> None:
    with pytest.raises(InvalidTransition) as raised:
        DOOR.transition(Door.OPEN, Push.LOCK, call_id=CALL_ID)
    assert raised.value.state is Door.OPEN
    assert raised.value.event is Push.LOCK
    assert str(raised.value) == "door: no transition from 'open' on 'lock'"


def test_each_transition_is_logged_from_event_to_with_the_call_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="handoff.states"):
        DOOR.transition(Door.CLOSED, Push.LOCK, call_id=CALL_ID, ref="handoff=7")
    assert caplog.messages == [f"door call={CALL_ID} handoff=7: closed -> lock -> locked"]


def test_a_refused_transition_is_logged_as_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="handoff.states"), pytest.raises(InvalidTransition):
        DOOR.transition(Door.LOCKED, Push.OPEN, call_id=CALL_ID)
    assert caplog.messages == [f"door call={CALL_ID}: locked -> open refused"]


def test_next_state_is_a_dry_run_that_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="handoff.states"):
        assert DOOR.next_state(Door.OPEN, Push.CLOSE) is Door.CLOSED
    assert caplog.messages == []


def test_terminal_states_are_those_never_left() -> None:
    assert DOOR.terminal == {Door.LOCKED}
    assert DOOR.is_terminal(Door.LOCKED)
    assert not DOOR.allows(Door.LOCKED, Push.OPEN)


def test_sources_of_an_event_are_the_states_that_allow_it() -> None:
    assert DOOR.sources_of(Push.OPEN) == {Door.CLOSED}
    assert DOOR.events_from(Door.CLOSED) == {Push.OPEN, Push.LOCK}


def test_a_call_answered_by_the_ai_moves_to_an_agent_and_back() -> None:
    state = CALL_LIFECYCLE.initial
    for event, expected in [
        (CallEvent.ANSWER, CallState.WITH_AI),
        (CallEvent.REQUEST_HANDOFF, CallState.HANDOFF_PENDING),
        (CallEvent.AGENT_CONNECTED, CallState.WITH_AGENT),
        (CallEvent.RETURN_TO_AI, CallState.WITH_AI),
        (CallEvent.END, CallState.ENDED),
    ]:
        state = CALL_LIFECYCLE.transition(state, event, call_id=CALL_ID)
        assert state is expected


def test_a_call_can_end_in_every_live_state_and_nothing_follows_the_end() -> None:
    for state in CallState:
        if state is not CallState.ENDED:
            assert CALL_LIFECYCLE.next_state(state, CallEvent.END) is CallState.ENDED
    assert CALL_LIFECYCLE.terminal == {CallState.ENDED}
    assert CALL_LIFECYCLE.events_from(CallState.ENDED) == frozenset()


def test_a_failed_handoff_leaves_the_caller_with_the_ai() -> None:
    assert (
        CALL_LIFECYCLE.next_state(CallState.HANDOFF_PENDING, CallEvent.HANDOFF_FAILED)
        is CallState.WITH_AI
    )


def test_an_agent_lost_mid_call_gives_the_caller_back_to_the_ai() -> None:
    lost = CALL_LIFECYCLE.next_state(CallState.WITH_AGENT, CallEvent.AGENT_LOST)
    assert lost is CallState.WITH_AI


def test_a_call_cannot_reach_an_agent_before_it_is_answered() -> None:
    with pytest.raises(InvalidTransition):
        CALL_LIFECYCLE.transition(CallState.NEW, CallEvent.AGENT_CONNECTED, call_id=CALL_ID)


def test_a_handoff_goes_from_request_to_completion() -> None:
    assert (
        walk(
            HANDOFF_LIFECYCLE,
            HandoffEvent.OFFER,
            HandoffEvent.ACCEPT,
            HandoffEvent.DIAL_AGENT,
            HandoffEvent.AGENT_ANSWERED,
            HandoffEvent.END,
        )
        is HandoffState.COMPLETED
    )


def test_a_handoff_can_return_the_call_to_the_ai() -> None:
    assert (
        walk(
            HANDOFF_LIFECYCLE,
            HandoffEvent.OFFER,
            HandoffEvent.ACCEPT,
            HandoffEvent.DIAL_AGENT,
            HandoffEvent.AGENT_ANSWERED,
            HandoffEvent.RETURN_TO_AI,
        )
        is HandoffState.RETURNED_TO_AI
    )


@pytest.mark.parametrize(
    "state",
    [HandoffState.REQUESTED, HandoffState.OFFERED, HandoffState.ACCEPTED, HandoffState.CONNECTING],
)
def test_caller_hanging_up_before_an_agent_joins_abandons_the_handoff(state: HandoffState) -> None:
    assert (
        HANDOFF_LIFECYCLE.next_state(state, HandoffEvent.CALLER_HUNG_UP) is HandoffState.ABANDONED
    )


def test_caller_hanging_up_on_the_agent_completes_the_handoff() -> None:
    assert (
        HANDOFF_LIFECYCLE.next_state(HandoffState.CONNECTED, HandoffEvent.CALLER_HUNG_UP)
        is HandoffState.COMPLETED
    )


def test_only_an_offered_handoff_can_be_accepted() -> None:
    assert HANDOFF_LIFECYCLE.sources_of(HandoffEvent.ACCEPT) == {HandoffState.OFFERED}


def test_nobody_accepting_in_time_times_the_handoff_out() -> None:
    assert walk(HANDOFF_LIFECYCLE, HandoffEvent.OFFER, HandoffEvent.TIME_OUT) is (
        HandoffState.TIMED_OUT
    )


def test_an_accepted_handoff_cannot_time_out_it_fails_with_a_reason_instead() -> None:
    with pytest.raises(InvalidTransition):
        walk(HANDOFF_LIFECYCLE, HandoffEvent.OFFER, HandoffEvent.ACCEPT, HandoffEvent.TIME_OUT)
    assert (
        walk(HANDOFF_LIFECYCLE, HandoffEvent.OFFER, HandoffEvent.ACCEPT, HandoffEvent.FAIL)
        is HandoffState.FAILED
    )


def test_finished_handoffs_take_no_more_events() -> None:
    assert HANDOFF_LIFECYCLE.terminal == {
        HandoffState.RETURNED_TO_AI,
        HandoffState.COMPLETED,
        HandoffState.ABANDONED,
        HandoffState.TIMED_OUT,
        HandoffState.FAILED,
    }
    for state in HANDOFF_LIFECYCLE.terminal:
        assert HANDOFF_LIFECYCLE.events_from(state) == frozenset()


def test_every_state_of_both_lifecycles_is_reachable() -> None:
    assert reachable(CALL_LIFECYCLE) == set(CallState)
    assert reachable(HANDOFF_LIFECYCLE) == set(HandoffState)


def test_a_reoffered_call_moves_up_within_its_level_never_into_the_next() -> None:
    assert [handoff_priority("normal", attempt) for attempt in (1, 2, 5, 50)] == [0, 1, 4, 4]
    assert urgency(handoff_priority("high", 50)) == "high"
    assert urgency(handoff_priority("emergency", 1)) == "emergency"
    assert handoff_priority("asap", 1) == 0  # unknown words are normal (the API refuses them)


def test_a_call_offered_again_is_at_least_high_and_an_emergency_stays_one() -> None:
    assert reoffer_level(handoff_priority("normal", 1)) == "high"
    assert reoffer_level(handoff_priority("high", 3)) == "high"
    assert reoffer_level(handoff_priority("emergency", 2)) == "emergency"


# ---- call-backs ----------------------------------------------------------------------------


def test_a_call_back_rings_the_agent_then_the_caller_then_connects_and_ends() -> None:
    assert walk(CALLBACK, CallbackEvent.AGENT_ANSWERED, CallbackEvent.CALLER_ANSWERED,
                CallbackEvent.END) is CallbackState.ENDED
    assert reachable(CALLBACK) == set(CallbackState)


def test_the_caller_is_never_connected_before_the_agent_answered() -> None:
    with pytest.raises(InvalidTransition):
        walk(CALLBACK, CallbackEvent.CALLER_ANSWERED)
    assert CALLBACK.sources_of(CallbackEvent.AGENT_ANSWERED) == {CallbackState.RINGING_AGENT}


def test_a_call_back_can_end_at_every_step_and_late_news_of_an_answer_changes_nothing() -> None:
    for state in (CallbackState.RINGING_AGENT, CallbackState.RINGING_CALLER,
                  CallbackState.CONNECTED):
        assert CALLBACK.next_state(state, CallbackEvent.END) is CallbackState.ENDED
    assert CALLBACK.events_from(CallbackState.ENDED) == {CallbackEvent.CALLER_ANSWERED}
    assert CALLBACK.next_state(CallbackState.ENDED, CallbackEvent.CALLER_ANSWERED) is (
        CallbackState.ENDED)


def test_a_restarted_controller_resumes_a_call_back_the_ledger_says_is_connected() -> None:
    assert CALLBACK.sources_of(CallbackEvent.RESUME) == {CallbackState.RINGING_AGENT}
    assert walk(CALLBACK, CallbackEvent.RESUME) is CallbackState.CONNECTED


def test_a_call_back_moves_only_by_its_lifecycle_logged_against_its_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cb = Callback("cb-1a2b", "+33123456789", 7, "cb-1a2b~agent", "cb-1a2b~caller",
                  "cb-1a2b~bridge", call_id=CALL_ID)
    with caplog.at_level(logging.INFO, logger="handoff.states"):
        cb.move(CallbackEvent.AGENT_ANSWERED)
        with pytest.raises(InvalidTransition):
            cb.move(CallbackEvent.RESUME)
    assert cb.to_json() == {"id": "cb-1a2b", "number": "+33123456789",
                            "state": "ringing_caller"}
    assert caplog.messages == [
        f"callback call={CALL_ID} callback=cb-1a2b: ringing_agent -> agent_answered -> "
        "ringing_caller",
        f"callback call={CALL_ID} callback=cb-1a2b: ringing_caller -> resume refused",
    ]


def test_a_log_is_a_path_only_if_each_step_leaves_where_the_last_arrived_by_the_table() -> None:
    talked = [("new", "answer", "with_ai"), ("with_ai", "request_handoff", "handoff_pending"),
              ("handoff_pending", "agent_connected", "with_agent"), ("with_agent", "end", "ended")]
    assert CALL_LIFECYCLE.path_errors(talked) == []
    # A step lost, one the table does not have, a wrong target, a call left open.
    assert CALL_LIFECYCLE.path_errors([talked[0], talked[2], talked[3]]) == [
        "step 2 leaves 'handoff_pending', not 'with_ai'"]
    assert CALL_LIFECYCLE.path_errors([("new", "end", "ended"), ("ended", "answer", "with_ai")]
                                      ) == ["step 2: no transition from 'ended' on 'answer'",
                                            "ends in 'with_ai', not a terminal state"]
    assert CALL_LIFECYCLE.path_errors([("new", "answer", "with_agent")], finished=False) == [
        "step 1: 'new' on 'answer' leads to 'with_ai', not 'with_agent'"]
    assert CALL_LIFECYCLE.path_errors(talked[:2]) == [
        "ends in 'handoff_pending', not a terminal state"]


def test_a_calls_history_is_checked_per_lifecycle_the_call_and_each_handoff() -> None:
    def step(machine: str, handoff_id: int | None, source: str, event: str,
             target: str) -> Transition:
        return Transition(call_id=CALL_ID, handoff_id=handoff_id, machine=machine,
                          from_state=source, event=event, to_state=target, at=datetime.now(UTC))

    history = [step("call", None, "new", "answer", "with_ai"),
               step("call", None, "with_ai", "request_handoff", "handoff_pending"),
               step("handoff", 1, "requested", "offer", "offered"),
               step("handoff", 1, "offered", "caller_hung_up", "abandoned"),
               step("handoff", 2, "requested", "offer", "offered"),
               step("call", None, "handoff_pending", "end", "ended")]
    assert history_errors(history) == ["handoff 2: ends in 'offered', not a terminal state"]
    assert history_errors(history[:4], finished=False) == []
    assert history_errors([step("presence", None, "offline", "x", "y")]) == [
        "presence: no lifecycle of that name"]
