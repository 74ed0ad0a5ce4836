"""The handoff lifecycle: one attempt to move a live call from the AI to a human agent.

A handoff row is one attempt. When an attempt fails after an agent accepted it (the agent
leg never answered, the browser vanished), the caller goes back to the AI and the
controller opens a new attempt (`attempt` + 1, higher priority); the failed row keeps
who accepted it and why it failed, so history shows every try.
"""

from __future__ import annotations

import enum

from handoff.states import StateMachine


class HandoffState(enum.StrEnum):
    REQUESTED = "requested"
    # Cards are on eligible agents' dashboards.
    OFFERED = "offered"
    # One agent won the accept; the agent leg is not created yet.
    ACCEPTED = "accepted"
    # The agent leg is dialled (its softphone auto-answers because its agent just clicked).
    CONNECTING = "connecting"
    # The agent leg is in the call bridge and the AI leg has left it.
    CONNECTED = "connected"
    RETURNED_TO_AI = "returned_to_ai"
    COMPLETED = "completed"
    ABANDONED = "abandoned"
    TIMED_OUT = "timed_out"
    FAILED = "failed"


class HandoffEvent(enum.StrEnum):
    OFFER = "offer"
    ACCEPT = "accept"
    DIAL_AGENT = "dial_agent"
    AGENT_ANSWERED = "agent_answered"
    RETURN_TO_AI = "return_to_ai"
    # The human part ended normally (agent ended the call, or handed it on by transfer).
    END = "end"
    CALLER_HUNG_UP = "caller_hung_up"
    TIME_OUT = "time_out"
    FAIL = "fail"


class FailureReason(enum.StrEnum):
    AGENT_NO_ANSWER = "agent_no_answer"
    AGENT_REJECTED = "agent_rejected"
    AGENT_LEG_FAILED = "agent_leg_failed"
    AGENT_VANISHED = "agent_vanished"
    CALLER_HUNG_UP = "caller_hung_up"
    PBX_RESTART = "pbx_restart"
    # The cluster node holding the call was lost (handoff.nodes).
    PBX_LOST = "pbx_lost"
    NO_AGENTS = "no_agents"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    # A call-back: the person called did not answer.
    NOT_ANSWERED = "not_answered"


# Before an agent leg is in the bridge, the caller hanging up abandons the handoff;
# once an agent is talking to the caller it is simply the end of the human part.
_BEFORE_AGENT = (HandoffState.REQUESTED, HandoffState.OFFERED,
                 HandoffState.ACCEPTED, HandoffState.CONNECTING)

HANDOFF_LIFECYCLE: StateMachine[HandoffState, HandoffEvent] = StateMachine(
    "handoff",
    HandoffState.REQUESTED,
    {
        (HandoffState.REQUESTED, HandoffEvent.OFFER): HandoffState.OFFERED,
        (HandoffState.OFFERED, HandoffEvent.ACCEPT): HandoffState.ACCEPTED,
        (HandoffState.ACCEPTED, HandoffEvent.DIAL_AGENT): HandoffState.CONNECTING,
        (HandoffState.CONNECTING, HandoffEvent.AGENT_ANSWERED): HandoffState.CONNECTED,
        (HandoffState.CONNECTED, HandoffEvent.RETURN_TO_AI): HandoffState.RETURNED_TO_AI,
        (HandoffState.CONNECTED, HandoffEvent.END): HandoffState.COMPLETED,
        (HandoffState.CONNECTED, HandoffEvent.CALLER_HUNG_UP): HandoffState.COMPLETED,
        (HandoffState.REQUESTED, HandoffEvent.TIME_OUT): HandoffState.TIMED_OUT,
        (HandoffState.OFFERED, HandoffEvent.TIME_OUT): HandoffState.TIMED_OUT,
        **{(state, HandoffEvent.CALLER_HUNG_UP): HandoffState.ABANDONED
           for state in _BEFORE_AGENT},
        # Any live attempt can fail; the failure reason says how (no agents, leg failed,
        # browser vanished mid-call, Asterisk restarted, cancelled by a supervisor...).
        **{(state, HandoffEvent.FAIL): HandoffState.FAILED
           for state in (*_BEFORE_AGENT, HandoffState.CONNECTED)},
    },
)

# How urgent a handoff is, as the AI asks for it, and the priority cards are sorted by.
PRIORITIES = {"normal": 0, "high": 5, "emergency": 10}
# A re-offered call moves up within its level (one step per attempt), never into the next:
# an emergency alert comes from what the caller said, not from a phone that did not answer.
MAX_ATTEMPT_BONUS = 4


def handoff_priority(level: str, attempt: int) -> int:
    """The priority of attempt `attempt` of a handoff asked for at `level`."""
    return PRIORITIES.get(level, 0) + min(max(attempt - 1, 0), MAX_ATTEMPT_BONUS)


def reoffer_level(priority: int) -> str:
    """The level a handoff is offered again at: a caller who already waited goes up to
    "high"; an emergency stays one."""
    return max("high", urgency(priority), key=PRIORITIES.__getitem__)


def urgency(priority: int) -> str:
    """The named level a priority belongs to (what a card shows: normal, high, emergency)."""
    return max((name for name, floor in PRIORITIES.items() if priority >= floor),
               key=PRIORITIES.__getitem__, default="normal")


# States in which the accepting agent is on (or about to be on) the call: that agent is
# busy and gets no new cards.
AGENT_BUSY_STATES = frozenset(
    {HandoffState.ACCEPTED, HandoffState.CONNECTING, HandoffState.CONNECTED}
)
