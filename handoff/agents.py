"""Who can take a call: agents, their roles, how their phone is reached, their presence
and its lifecycle (duty included)."""

from __future__ import annotations

import enum

from handoff.states import StateMachine


class AgentRole(enum.StrEnum):
    AGENT = "agent"
    # Can listen, whisper, barge and take over other agents' and the AI's calls.
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class EndpointKind(enum.StrEnum):
    # A browser softphone: PJSIP endpoint with webrtc=yes (DTLS-SRTP over WSS).
    WEBRTC = "webrtc"
    # A SIP desk phone on the LAN.
    DESKPHONE = "deskphone"


class Presence(enum.StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    AWAY = "away"
    # After a call, before the agent takes the next card (notes, dispositions).
    WRAP_UP = "wrap_up"


class PresenceEvent(enum.StrEnum):
    # The desk's duty switch; signing out everywhere, or choosing "offline", is going off.
    GO_ON_DUTY = "go_on_duty"
    GO_OFF_DUTY = "go_off_duty"
    # The desk's presence menu.
    CHOOSE_AVAILABLE = "choose_available"
    CHOOSE_AWAY = "choose_away"
    CHOOSE_WRAP_UP = "choose_wrap_up"
    # The controller: the agent's part of a call is over, then their wrap-up time is.
    WRAP_UP_BEGINS = "wrap_up_begins"
    WRAP_UP_ENDS = "wrap_up_ends"
    # The PBX has not seen the agent's phone registered for a while (handoff.phone_watch).
    PHONE_LOST = "phone_lost"
    # The agent let a queue's cards pass untaken too many times in a row (handoff.queues).
    MISSED_OFFERS = "missed_offers"


# Duty is folded into presence: off duty is exactly "offline", so an agent cannot be
# offline on duty (no card reaches them, yet their Accept would be taken) nor available
# off duty. The on_duty column is written with the presence, from this rule alone.
ON_DUTY = (Presence.AVAILABLE, Presence.AWAY, Presence.WRAP_UP)

PRESENCE: StateMachine[Presence, PresenceEvent] = StateMachine("presence", Presence.OFFLINE, {
    # Coming on duty means reachable: routing only offers cards to the available.
    (Presence.OFFLINE, PresenceEvent.GO_ON_DUTY): Presence.AVAILABLE,
    # A second tab, or a click the socket had not caught up with, changes nothing.
    **{(state, PresenceEvent.GO_ON_DUTY): state for state in ON_DUTY},
    **{(state, PresenceEvent.GO_OFF_DUTY): Presence.OFFLINE for state in Presence},
    # Only an agent on duty chooses: going on duty is where their phone is checked.
    **{(state, PresenceEvent.CHOOSE_AVAILABLE): Presence.AVAILABLE for state in ON_DUTY},
    **{(state, PresenceEvent.CHOOSE_AWAY): Presence.AWAY for state in ON_DUTY},
    **{(state, PresenceEvent.CHOOSE_WRAP_UP): Presence.WRAP_UP for state in ON_DUTY},
    # Only from available: an agent who chose away (or went off duty) keeps that. And
    # back to available only if still in wrap-up: the agent may have ended it early or
    # chosen something else meanwhile.
    (Presence.AVAILABLE, PresenceEvent.WRAP_UP_BEGINS): Presence.WRAP_UP,
    (Presence.WRAP_UP, PresenceEvent.WRAP_UP_ENDS): Presence.AVAILABLE,
    # Only the available are offered cards, so only they are set away for a dead phone,
    # or for a run of cards they did not take.
    (Presence.AVAILABLE, PresenceEvent.PHONE_LOST): Presence.AWAY,
    (Presence.AVAILABLE, PresenceEvent.MISSED_OFFERS): Presence.AWAY,
})

class AgentState(enum.StrEnum):
    """What an agent is doing, as every view says it (board, admin table, metrics): the
    presence they chose, except that a call in progress comes first."""

    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    AVAILABLE = "available"
    AWAY = "away"
    OFF_DUTY = "off_duty"


def agent_state(presence: Presence, on_call: bool) -> AgentState:
    """`on_call`: the agent accepted a handoff that is not over (AgentsRepo.busy_agent_ids).

    Presence alone says "available" while the agent talks to a caller (it is what they
    come back to), and an agent who goes off duty mid-call is still on that call until
    it ends: the call decides.
    """
    if on_call:
        return AgentState.ON_CALL
    return {
        Presence.OFFLINE: AgentState.OFF_DUTY,
        Presence.AVAILABLE: AgentState.AVAILABLE,
        Presence.AWAY: AgentState.AWAY,
        Presence.WRAP_UP: AgentState.WRAP_UP,
    }[presence]


# Who the audit log names for a change nobody clicked (wrap-up, a phone gone quiet).
CONTROLLER = "controller"


def is_on_duty(presence: Presence) -> bool:
    return presence is not Presence.OFFLINE


def duty_event(on_duty: bool) -> PresenceEvent:
    return PresenceEvent.GO_ON_DUTY if on_duty else PresenceEvent.GO_OFF_DUTY


def choice_event(presence: Presence) -> PresenceEvent:
    """The event of choosing `presence` in the desk's menu ("offline" is going off duty)."""
    return {
        Presence.OFFLINE: PresenceEvent.GO_OFF_DUTY,
        Presence.AVAILABLE: PresenceEvent.CHOOSE_AVAILABLE,
        Presence.AWAY: PresenceEvent.CHOOSE_AWAY,
        Presence.WRAP_UP: PresenceEvent.CHOOSE_WRAP_UP,
    }[presence]


def audit_action(event: PresenceEvent) -> str:
    """The audit log's name for a change: duty changes and presence changes, as before."""
    if event in (PresenceEvent.GO_ON_DUTY, PresenceEvent.GO_OFF_DUTY):
        return "duty_change"
    return "presence_change"
