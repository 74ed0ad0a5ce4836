"""One live call in the controller's memory, and the two named lifecycles it goes through.

The ledger (the calls and handoffs tables) says what happened to a call; a live call
also knows what is going on right now, between ARI events: whether the agent's phone
has picked up but the AI has not left yet, whether a hang-up is on its way. Those are
two small state machines, each change logged ``from -> event -> to`` against the call:

- who the caller talks to (:data:`PARTY`): the AI (or hold music, or nobody yet), an
  agent whose phone just answered while the AI is still leaving, an agent (or a
  supervisor who took over), or the assistant's fallback number;
- how far the call is from its end (:data:`ENDING`): live, being ended by us, being
  hung up by the caller or Asterisk, both, closed.

Only this class changes those states; the flows of :mod:`handoff.live` and the other
services (supervision) call its methods.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from handoff.calls import CallOutcome
from handoff.live.legs import new_leg_id
from handoff.states import StateMachine, from_each, stays


class Party(enum.StrEnum):
    AI = "ai"  # the AI leg (or hold music, or nobody yet): no person has the caller
    AGENT_ANSWERED = "agent_answered"  # a person's phone is up; the AI leaves soon
    AGENT = "agent"  # an agent, or a supervisor who took over, has the caller
    FORWARDED = "forwarded"  # the assistant's fallback number answered


class PartyEvent(enum.StrEnum):
    ANSWER = "answer"
    CONNECT = "connect"
    AGENT_LOST = "agent_lost"  # the agent's leg went, or they handed back to the AI
    TAKE_OVER = "take_over"
    TRANSFERRED = "transferred"
    FORWARD_ANSWERED = "forward_answered"
    RESUME = "resume"  # a restarted controller finds the agent talking to the caller


_AI_OR_AGENT = (Party.AI, Party.AGENT_ANSWERED, Party.AGENT)  # not yet forwarded

PARTY: StateMachine[Party, PartyEvent] = StateMachine("live party", Party.AI, {
    (Party.AI, PartyEvent.ANSWER): Party.AGENT_ANSWERED,
    (Party.AGENT_ANSWERED, PartyEvent.CONNECT): Party.AGENT,
    # A leg that never answered, or one already written off, leaves the AI where it is.
    **from_each(_AI_OR_AGENT, PartyEvent.AGENT_LOST, Party.AI),
    **from_each((Party.AI, Party.AGENT), PartyEvent.TAKE_OVER, Party.AGENT),
    (Party.AGENT, PartyEvent.TRANSFERRED): Party.AGENT,
    (Party.AI, PartyEvent.FORWARD_ANSWERED): Party.FORWARDED,
    **from_each(_AI_OR_AGENT, PartyEvent.RESUME, Party.AGENT),
})


class Ending(enum.StrEnum):
    LIVE = "live"
    ENDING = "ending"  # we hang the caller up; their hang-up has not been seen yet
    LEAVING = "leaving"  # the caller's leg is being hung up (by them or Asterisk)
    HANGING_UP = "hanging_up"  # both: we ended it and the hang-up is on its way
    CLOSED = "closed"  # the caller's leg is gone and the call has its outcome


class EndingEvent(enum.StrEnum):
    END = "end"  # the controller hangs the caller up
    HANGUP_SEEN = "hangup_seen"  # Asterisk reports the caller's leg being hung up
    CLOSE = "close"


ENDING: StateMachine[Ending, EndingEvent] = StateMachine("live ending", Ending.LIVE, {
    (Ending.LIVE, EndingEvent.END): Ending.ENDING,
    (Ending.LEAVING, EndingEvent.END): Ending.HANGING_UP,
    (Ending.LIVE, EndingEvent.HANGUP_SEEN): Ending.LEAVING,
    (Ending.ENDING, EndingEvent.HANGUP_SEEN): Ending.HANGING_UP,
    **from_each((Ending.LIVE, Ending.ENDING, Ending.LEAVING, Ending.HANGING_UP),
                EndingEvent.CLOSE, Ending.CLOSED),
    # The same news again changes nothing; nor does late news of a call already closed.
    **stays((Ending.ENDING, Ending.HANGING_UP, Ending.CLOSED), EndingEvent.END),
    **stays((Ending.LEAVING, Ending.HANGING_UP, Ending.CLOSED), EndingEvent.HANGUP_SEEN),
})


@dataclass
class Transfer:
    """An agent handing their caller on to a named colleague, or a queue, with a note."""

    handoff_id: int
    to_agent: int | None  # None for a queue, until one of its members accepted
    leg: str | None = None  # the colleague's leg, once they accepted and it rings


@dataclass
class LiveCall:
    call_id: str
    assistant: str
    caller: str  # the caller's channel id: the key of everything in this call
    bridge: str
    caller_number: str = ""
    ai: str | None = None
    # An AI leg on its way into the call's bridge (made, not yet seen entering it), and
    # the keys the caller pressed meanwhile: the bridge passes a key only to the legs in
    # it, so these are given to the AI once its leg is in (handoff.live.ai).
    ai_joining: str | None = None
    keys_for_ai: list[str] = field(default_factory=list)
    agent: str | None = None
    agent_id: int | None = None
    handoff_id: int | None = None
    recording: str | None = None
    legs: int = 0
    party: Party = Party.AI
    ending_state: Ending = Ending.LIVE
    # Agent legs created (not dialled) and already in the bridge while a handoff is on
    # offer, by agent id: the winner's leg only needs a dial.
    staged: dict[int, str] = field(default_factory=dict)
    # A transfer on offer or ringing: the first agent keeps talking to the caller until
    # the second agent's leg answers, then that leg replaces theirs in the same bridge.
    transfer: Transfer | None = None
    forward: str | None = None  # the leg to the assistant's fallback number
    callback_requested: bool = False
    # The assistant's out-of-hours fallback has been applied to this call (once).
    out_of_hours: bool = False
    # The caller is leaving a voicemail (the assistant's fallback): no AI, no card.
    voicemail: bool = False
    # AI legs that failed in this call (an engine that refused or dropped the stream):
    # the first is replaced at once, the second puts the caller on hold for a person.
    ai_failures: int = 0
    on_hold: bool = False  # hold music in the call bridge: no AI and no person yet
    # How the call ends, when the controller ends it for a reason of its own (the agent
    # hung up, nobody can take the caller); otherwise it follows from the call's state.
    outcome: CallOutcome | None = None
    pbx_hangup: bool = False  # the caller's leg was ended by Asterisk, not by the caller
    # The caller's line went silent past the media timeout and the PBX ended the leg: the
    # caller is gone as if they had hung up (no network to say so), Asterisk is not.
    line_lost: bool = False
    causes: dict[str, int] = field(default_factory=dict)  # Q.850 cause per ended leg
    hung_up_by_phone: set[str] = field(default_factory=set)  # agent legs ended by a BYE
    # The card on offer gives up after its timeout unless taken: cancelled when it is
    # (the task holds the call until it ends).
    offer_timeout: asyncio.Task[None] | None = None
    # The words of the call's assistant for its announcements, as its card's offer read
    # them: the handover's announcement says them without reading the assistant again
    # (and forgets them: a later moment reads the assistant anew). None: not read.
    announcements: dict[str, str] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    # Clear from the agent's answer until the AI has left (the short overlap): commands
    # that change who the caller talks to wait for it rather than refuse.
    move_settled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.move_settled.set()

    def new_leg_id(self, role: str) -> str:
        self.legs += 1
        return new_leg_id(self.caller, role, self.legs)

    # ---- who the caller talks to ---------------------------------------------------------

    @property
    def agent_answered(self) -> bool:
        """The agent's leg is up (the AI may still be leaving)."""
        return self.party in (Party.AGENT_ANSWERED, Party.AGENT)

    @property
    def connected(self) -> bool:
        """A person has the caller and the AI has left."""
        return self.party is Party.AGENT

    @property
    def forward_answered(self) -> bool:
        return self.party is Party.FORWARDED

    def _party(self, event: PartyEvent) -> None:
        self.party = PARTY.transition(self.party, event, call_id=self.call_id)

    def agent_ringing(self, leg: str, agent_id: int) -> None:
        """An agent accepted: their leg rings (the AI keeps the caller meanwhile)."""
        self.agent, self.agent_id = leg, agent_id
        self.answered.clear()

    def agent_picked_up(self) -> bool:
        """The agent's phone answered; the move completes once their voice flows. False
        when that changes nothing: an answer already seen, or a call being ended."""
        if self.agent_answered or self.ending:
            return False
        self._party(PartyEvent.ANSWER)
        self.answered.set()
        self.move_settled.clear()
        return True

    def agent_connected(self) -> None:
        self._party(PartyEvent.CONNECT)

    def resumed_with_agent(self) -> None:
        """After a restart: the ledger says a person has the caller, and their leg is up."""
        self._party(PartyEvent.RESUME)
        self.answered.set()

    def resumed_answered(self) -> None:
        """After a restart: the agent's leg answered while nobody listened."""
        if self.party is Party.AI:
            self._party(PartyEvent.ANSWER)
        self.answered.set()

    def agent_lost(self) -> tuple[bool, bool]:
        """The agent's leg went or was handed back: (had the call, had picked up)."""
        had = self.connected, self.agent_answered
        self.agent = None
        self._party(PartyEvent.AGENT_LOST)
        return had

    def taken_over(self, leg: str, agent_id: int, handoff_id: int) -> list[str]:
        """A supervisor's leg has the caller now; returns the legs that must leave (the
        AI's, the agent's, staged ones), which from here on are not this call's."""
        leaving = [leg for leg in (self.ai, self.agent) if leg]
        leaving += self.staged.values()
        self.staged.clear()
        self.ai, self.agent = None, leg
        self.agent_id, self.handoff_id = agent_id, handoff_id
        self._party(PartyEvent.TAKE_OVER)
        self.answered.set()
        return leaving

    def transferred(self, transfer: Transfer) -> None:
        """The colleague's leg answered and takes the caller from the first agent."""
        assert transfer.leg is not None and transfer.to_agent is not None
        self.agent, self.agent_id = transfer.leg, transfer.to_agent
        self.handoff_id = transfer.handoff_id
        self._party(PartyEvent.TRANSFERRED)
        self.answered.set()

    def forward_picked_up(self) -> bool:
        """The fallback number answered. False when that changes nothing: an answer
        already seen, or a call being ended."""
        if self.ending or self.forward_answered:
            return False
        self._party(PartyEvent.FORWARD_ANSWERED)
        return True

    # ---- the end -------------------------------------------------------------------------

    @property
    def ending(self) -> bool:
        """The controller is ending the call, or it has ended: no new work starts."""
        return self.ending_state in (Ending.ENDING, Ending.HANGING_UP, Ending.CLOSED)

    @property
    def caller_leaving(self) -> bool:
        """The caller's hang-up is on its way (or done): nothing more is put through."""
        return self.ending_state in (Ending.LEAVING, Ending.HANGING_UP, Ending.CLOSED)

    @property
    def closed(self) -> bool:
        return self.ending_state is Ending.CLOSED

    def _ending(self, event: EndingEvent) -> None:
        self.ending_state = ENDING.transition(self.ending_state, event, call_id=self.call_id)

    def end(self, outcome: CallOutcome | None = None) -> None:
        """The controller hangs the caller up, for `outcome` if it has a reason."""
        self.outcome = outcome or self.outcome
        self._ending(EndingEvent.END)

    def hangup_seen(self) -> None:
        self._ending(EndingEvent.HANGUP_SEEN)

    def close(self) -> None:
        self._ending(EndingEvent.CLOSE)


def legs_of(live: LiveCall) -> set[str]:
    """Every channel and bridge of a live call, including legs staged, ringing a
    colleague for a transfer, or forwarding to the fallback number."""
    legs = {live.caller, live.ai, live.agent, live.forward, live.bridge,
            *live.staged.values(),
            live.transfer.leg if live.transfer else None}
    return {leg for leg in legs if leg}
