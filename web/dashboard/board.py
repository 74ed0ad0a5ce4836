"""What the dashboards show: the handoff cards on offer and the agents' duty.

The board is plain state with no I/O: the feed (feed.py) turns domain events into
board changes, the hub (hub.py) numbers the changes and sends them. Because the whole
state lives here, a snapshot for any viewer is computable at any moment, which is what
lets a reconnecting tab or a dropped slow client start again from a clean picture.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handoff.agents import AgentRole, AgentState, Presence, agent_state
from handoff.handoffs import urgency
from handoff.store.models import Agent, Call, Handoff, PauseReason
from web.dashboard.access import ROLE_RANK
from web.dashboard.words import why


@dataclass(frozen=True, slots=True)
class Card:
    """One handoff on offer: everything an agent reads before clicking Accept."""

    handoff_id: int
    call_id: str
    caller_number: str
    caller_name: str
    summary: str
    reason: str
    topic: str | None
    priority: int
    attempt: int
    # When the caller first asked for a person; a re-offered attempt keeps its place
    # in the queue because it is the same caller still waiting.
    waiting_since: datetime
    # A transfer to a named agent: only that agent (and supervisors) see the card.
    target_agent_id: int | None = None
    # What the transferring agent wrote for their colleague.
    note: str = ""
    # A queue's card for no one in particular: the members who may see it (an
    # offer_all queue's members; nobody while an assigning queue looks for its next
    # member); None: everyone, as without queues.
    members: frozenset[int] | None = None

    @classmethod
    def of(
        cls, handoff: Handoff, call: Call, *, contact_name: str | None,
        waiting_since: datetime | None = None, members: frozenset[int] | None = None,
    ) -> Card:
        return cls(
            handoff_id=handoff.id,
            call_id=call.id,
            caller_number=call.caller_number,
            caller_name=call.caller_name or contact_name or "",
            summary=handoff.summary or "",
            reason=handoff.reason,
            topic=handoff.topic,
            priority=handoff.priority,
            attempt=handoff.attempt,
            waiting_since=waiting_since or handoff.requested_at,
            target_agent_id=handoff.target_agent_id,
            note=handoff.note or "",
            members=members,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "handoff_id": self.handoff_id,
            "call_id": self.call_id,
            "caller_number": self.caller_number,
            "caller_name": self.caller_name,
            "summary": self.summary,
            "reason": self.reason,
            "topic": self.topic,
            # What the card says: "Asked for a person · Billing" (web.dashboard.words).
            "why": why(self.reason, self.topic),
            "priority": self.priority,
            "urgency": urgency(self.priority),
            "attempt": self.attempt,
            "waiting_since": self.waiting_since.isoformat(),
            "targeted": self.target_agent_id is not None,
            "note": self.note,
        }

    def sort_key(self) -> tuple[int, datetime, int]:
        # The order of HandoffsRepo.offered(): most urgent, then longest waiting.
        return (-self.priority, self.waiting_since, self.handoff_id)


@dataclass(frozen=True, slots=True)
class AgentView:
    id: int
    login: str
    display_name: str
    role: AgentRole
    on_duty: bool
    presence: Presence
    # On a call, or with one being put through (HandoffsRepo.accept refuses them): their
    # desk offers no cards until it is over.
    busy: bool
    # False: supervises or administers only; their desk has no duty switch.
    takes_calls: bool = True
    # When the controller ends the wrap-up it began after the agent's call (the desk
    # counts down to it); None for a wrap-up the agent chose, which lasts until they
    # choose again.
    wrap_up_until: datetime | None = None
    # Since when the presence (or the pause reason) holds: the board counts the pause's
    # duration from it. None for a presence from before it was kept (migration 0013).
    presence_since: datetime | None = None
    # Why an agent away is away, as the admin named it, and whether it is work off the
    # phone (productive) or a break.
    pause_reason: str | None = None
    pause_productive: bool | None = None

    @classmethod
    def of(cls, agent: Agent, busy_ids: Collection[int], *,
           wrap_up_until: datetime | None = None,
           pause_reason: PauseReason | None = None) -> AgentView:
        """`busy_ids`: AgentsRepo.busy_agent_ids(), read in the same transaction;
        `pause_reason`: the row of agent.pause_reason_id (feed.agent_view reads it)."""
        paused = pause_reason if agent.presence is Presence.AWAY else None
        return cls(agent.id, agent.login, agent.display_name, agent.role,
                   agent.on_duty, agent.presence, agent.id in busy_ids,
                   agent.takes_calls,
                   wrap_up_until if agent.presence is Presence.WRAP_UP else None,
                   agent.presence_since,
                   None if paused is None else paused.name,
                   None if paused is None else paused.productive)

    @property
    def state(self) -> AgentState:
        return agent_state(self.presence, self.busy)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "login": self.login, "display_name": self.display_name,
            "role": self.role.value, "on_duty": self.on_duty,
            "presence": self.presence.value, "busy": self.busy,
            "state": self.state.value, "takes_calls": self.takes_calls,
            "wrap_up_until": self.wrap_up_until.isoformat() if self.wrap_up_until else None,
            "presence_since": self.presence_since.isoformat() if self.presence_since else None,
            "pause_reason": self.pause_reason, "pause_productive": self.pause_productive,
        }


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may see a change: everyone, or named agents plus supervisors and admins."""

    agent_ids: frozenset[int] | None = None

    def includes(self, agent_id: int, role: AgentRole) -> bool:
        if self.agent_ids is None or agent_id in self.agent_ids:
            return True
        return ROLE_RANK[role] >= ROLE_RANK[AgentRole.SUPERVISOR]


EVERYONE = Audience()


def audience_of(card: Card) -> Audience:
    if card.target_agent_id is not None:
        return Audience(frozenset({card.target_agent_id}))
    if card.members is not None:
        return Audience(card.members)
    return EVERYONE


@dataclass(frozen=True, slots=True)
class Change:
    """One delta before numbering: what changed and who may see it."""

    op: str
    body: dict[str, Any]
    audience: Audience = EVERYONE


@dataclass
class Board:
    cards: dict[int, Card] = field(default_factory=dict)
    agents: dict[int, AgentView] = field(default_factory=dict)

    # ---- reading ------------------------------------------------------------------------

    def snapshot_for(self, agent_id: int, role: AgentRole) -> dict[str, Any]:
        cards = sorted(
            (card for card in self.cards.values()
             if audience_of(card).includes(agent_id, role)),
            key=Card.sort_key,
        )
        me = self.agents.get(agent_id)
        state: dict[str, Any] = {
            "me": me.to_json() if me else None,
            "cards": [card.to_json() for card in cards],
        }
        if ROLE_RANK[role] >= ROLE_RANK[AgentRole.SUPERVISOR]:
            state["agents"] = [a.to_json() for a in sorted(self.agents.values(),
                                                           key=lambda a: a.id)]
        return state

    def cards_of_call(self, call_id: str) -> list[int]:
        return [card.handoff_id for card in self.cards.values() if card.call_id == call_id]

    # ---- changing: each returns the deltas to send --------------------------------------

    def add_card(self, card: Card) -> list[Change]:
        if self.cards.get(card.handoff_id) == card:
            return []
        self.cards[card.handoff_id] = card
        return [Change("card_added", {"card": card.to_json()}, audience_of(card))]

    def remove_card(
        self, handoff_id: int, reason: str, *, taken_by: AgentView | None = None
    ) -> list[Change]:
        card = self.cards.pop(handoff_id, None)
        if card is None:
            return []
        body: dict[str, Any] = {"handoff_id": handoff_id, "reason": reason}
        if taken_by is not None:
            body["taken_by"] = {"id": taken_by.id, "display_name": taken_by.display_name}
        return [Change("card_removed", body, audience_of(card))]

    def set_agent(self, agent: AgentView) -> list[Change]:
        if self.agents.get(agent.id) == agent:
            return []
        self.agents[agent.id] = agent
        return [Change("agent_changed", {"agent": agent.to_json()},
                       Audience(frozenset({agent.id})))]

    def replace(self, cards: Iterable[Card], agents: Iterable[AgentView]) -> list[Change]:
        """Make the board equal to what the store says, as deltas (after missed events)."""
        changes: list[Change] = []
        fresh = {card.handoff_id: card for card in cards}
        for handoff_id in [h for h in self.cards if h not in fresh]:
            changes += self.remove_card(handoff_id, "gone")
        for card in fresh.values():
            changes += self.add_card(card)
        for agent in agents:
            changes += self.set_agent(agent)
        return changes
