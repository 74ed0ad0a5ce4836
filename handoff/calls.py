"""The call lifecycle: who the caller is talking to, from arrival to hang-up.

The caller's channel sits in one mixing bridge for the whole call; these states say which
other leg shares that bridge with it (the AI leg, an agent leg, a fallback trunk leg).
"""

from __future__ import annotations

import enum

from handoff.states import StateMachine


class CallState(enum.StrEnum):
    # The caller's channel entered Stasis; not answered, no bridge yet.
    NEW = "new"
    # Answered; caller and AI leg are in the call bridge.
    WITH_AI = "with_ai"
    # A handoff is open; the caller still hears the AI (or hold music) meanwhile.
    HANDOFF_PENDING = "handoff_pending"
    # An agent leg is in the call bridge; the AI leg has left it.
    WITH_AGENT = "with_agent"
    # Nobody could take the call: it is bridged to the assistant's fallback number.
    FORWARDED = "forwarded"
    ENDED = "ended"


class CallDirection(enum.StrEnum):
    INBOUND = "inbound"  # a caller rang one of the assistants' numbers
    OUTBOUND = "outbound"  # an agent called someone back over the trunk


class CallEvent(enum.StrEnum):
    ANSWER = "answer"
    REQUEST_HANDOFF = "request_handoff"
    AGENT_CONNECTED = "agent_connected"
    # The handoff ended without an agent (timed out, failed, cancelled): the AI keeps the call.
    HANDOFF_FAILED = "handoff_failed"
    RETURN_TO_AI = "return_to_ai"
    # The agent's leg died (browser closed, network lost): the AI rejoins and apologises.
    AGENT_LOST = "agent_lost"
    # A supervisor takes the call over directly, with or without a pending handoff.
    TAKE_OVER = "take_over"
    FORWARD = "forward"
    # The person an agent calls back answered (outbound calls only).
    CALLBACK_ANSWERED = "callback_answered"
    END = "end"


class CallOutcome(enum.StrEnum):
    """How a call ended; every call gets exactly one when it is closed."""

    COMPLETED_BY_AI = "completed_by_ai"
    COMPLETED_BY_AGENT = "completed_by_agent"
    ABANDONED = "abandoned"
    FALLBACK_NUMBER = "fallback_number"
    CALLBACK_REQUESTED = "callback_requested"
    PBX_RESTART = "pbx_restart"
    # The cluster node holding the call was lost (its lease expired): a surviving
    # controller recorded the end, since none could reach the caller's leg any more.
    PBX_LOST = "pbx_lost"
    FAILED = "failed"
    # A call-back the person called did not answer.
    NOT_ANSWERED = "not_answered"


class Speaker(enum.StrEnum):
    CALLER = "caller"
    AI = "ai"
    AGENT = "agent"
    SYSTEM = "system"


_LIVE = (CallState.NEW, CallState.WITH_AI, CallState.HANDOFF_PENDING,
         CallState.WITH_AGENT, CallState.FORWARDED)

CALL_LIFECYCLE: StateMachine[CallState, CallEvent] = StateMachine(
    "call",
    CallState.NEW,
    {
        (CallState.NEW, CallEvent.ANSWER): CallState.WITH_AI,
        # A call-back: the agent's own call, theirs from the moment the person answers.
        (CallState.NEW, CallEvent.CALLBACK_ANSWERED): CallState.WITH_AGENT,
        (CallState.WITH_AI, CallEvent.REQUEST_HANDOFF): CallState.HANDOFF_PENDING,
        (CallState.HANDOFF_PENDING, CallEvent.AGENT_CONNECTED): CallState.WITH_AGENT,
        (CallState.HANDOFF_PENDING, CallEvent.HANDOFF_FAILED): CallState.WITH_AI,
        # A transfer: the first agent stays with the caller while the second one's card
        # rings, then the second agent's leg replaces the first in the same bridge.
        (CallState.WITH_AGENT, CallEvent.AGENT_CONNECTED): CallState.WITH_AGENT,
        (CallState.WITH_AGENT, CallEvent.RETURN_TO_AI): CallState.WITH_AI,
        (CallState.WITH_AGENT, CallEvent.AGENT_LOST): CallState.WITH_AI,
        (CallState.WITH_AI, CallEvent.TAKE_OVER): CallState.WITH_AGENT,
        (CallState.HANDOFF_PENDING, CallEvent.TAKE_OVER): CallState.WITH_AGENT,
        (CallState.WITH_AGENT, CallEvent.TAKE_OVER): CallState.WITH_AGENT,
        (CallState.WITH_AI, CallEvent.FORWARD): CallState.FORWARDED,
        (CallState.HANDOFF_PENDING, CallEvent.FORWARD): CallState.FORWARDED,
        # The caller can hang up, or Asterisk can vanish, at any moment of the call.
        **{(state, CallEvent.END): CallState.ENDED for state in _LIVE},
    },
)
