"""From the domain's events to board changes.

The controller publishes thin events on the EventHub ("offered" carries only the
handoff and call ids); the feed reads the rest from the store, so a card shows the
same caller, summary and priority whether it arrived live or in a snapshot built after
a restart. Events are handled one at a time in the order published, so a "taken" can
never overtake the "offered" of the same card.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime

from handoff.agents import Presence, PresenceEvent, audit_action
from handoff.events import (
    AGENTS_TOPIC,
    CALLS_TOPIC,
    CARDS_TOPIC,
    TRANSCRIPTS_TOPIC,
    Event,
    EventHub,
    EventType,
)
from handoff.handoffs import HandoffState
from handoff.store import NotFound, Store, Transaction
from handoff.store.models import Agent, Handoff
from web.dashboard.board import AgentView, Audience, Board, Card, Change

log = logging.getLogger(__name__)

# A handler slower than this is logged: the feed is sequential, so a slow database
# read delays every later card on every dashboard.
LATENCY_BUDGET_S = 0.25

Publish = Callable[[list[Change]], None]
Handler = Callable[[Event], Awaitable[list[Change]]]


async def card_for(tx: Transaction, handoff: Handoff) -> Card:
    call = await tx.calls.get(handoff.call_id)
    # The caller ID's name wins (Card.of); the contact book is read only without one.
    contact_name = None if call.caller_name else await tx.contacts.name_for(call.caller_number)
    # A re-offered attempt (the agent's leg failed) keeps the first attempt's time: the
    # caller has been waiting since then, and the card must not jump back in the queue.
    first = handoff
    earlier_attempts = await tx.handoffs.for_call(handoff.call_id) if handoff.attempt > 1 else []
    for earlier in reversed(earlier_attempts):
        if earlier.id > first.id:
            continue
        first = earlier
        if earlier.attempt == 1:
            break
    return Card.of(handoff, call, contact_name=contact_name, waiting_since=first.requested_at,
                   members=await _queue_members(tx, handoff))


async def _queue_members(tx: Transaction, handoff: Handoff) -> frozenset[int] | None:
    """Who sees a queue's card that no one holds (handoff.queues): an offer_all queue's
    members; nobody but supervisors while an assigning queue finds its next member."""
    if handoff.queue_id is None or handoff.target_agent_id is not None:
        return None
    queue = await tx.queues.get(handoff.queue_id)
    if queue.strategy.assigns:
        return frozenset()
    return frozenset(m.agent_id for m in await tx.queues.members(queue.id))


async def agent_view(tx: Transaction, agent: Agent, busy_ids: Collection[int]) -> AgentView:
    """The agent as the boards show them, with their pause reason, and when their
    wrap-up ends if the controller timed it (the end is in the audit line of its
    beginning, so a restarted process counts down to the same moment)."""
    until = None
    if agent.presence is Presence.WRAP_UP:
        began = await tx.audit.last(f"agent:{agent.id}", audit_action(
            PresenceEvent.WRAP_UP_BEGINS))
        if began is not None and began.detail.get("event") == PresenceEvent.WRAP_UP_BEGINS:
            with contextlib.suppress(TypeError, ValueError):
                until = datetime.fromisoformat(str(began.detail.get("ends_at")))
    reason = None
    if agent.pause_reason_id is not None:
        reason = await tx.pause_reasons.get(agent.pause_reason_id)
    return AgentView.of(agent, busy_ids, wrap_up_until=until, pause_reason=reason)


async def current_state(store: Store) -> tuple[list[Card], list[AgentView]]:
    async with store.transaction() as tx:
        cards = [await card_for(tx, handoff) for handoff in await tx.handoffs.offered()]
        busy = await tx.agents.busy_agent_ids()
        agents = [await agent_view(tx, agent, busy) for agent in await tx.agents.all()]
    return cards, agents


# What changes the supervisor board's list of live calls.
BOARD_EVENTS = frozenset({EventType.OFFERED, EventType.TAKEN, EventType.WITHDRAWN,
                          EventType.CALL_ENDED, EventType.CALL_CHANGED})
SUPERVISORS = Audience(frozenset())  # named agents: none; supervisors and admins see all


class Feed:
    def __init__(self, store: Store, events: EventHub, board: Board, publish: Publish) -> None:
        self._store = store
        self._events = events
        self._board = board
        self._publish = publish
        self._handlers: Mapping[str, Handler] = {
            EventType.OFFERED: self._offered,
            EventType.WITHDRAWN: self._withdrawn,
            EventType.TAKEN: self._taken,
            EventType.CALL_ENDED: self._call_ended,
            EventType.AGENT_CHANGED: self._agent_changed,
            EventType.CALL_CHANGED: self._call_changed,
            EventType.TRANSCRIPT: self._transcript,
        }
        # Who took a card of each live call (the first agent and a transfer's colleague):
        # the audience of that call's panel updates. Empty after a restart: panels then
        # catch up with their slow poll.
        self._agents_of_call: dict[str, set[int]] = {}

    async def reconcile(self) -> None:
        """Bring the board in line with the store (at start, and after missed events)."""
        cards, agents = await current_state(self._store)
        self._publish(self._board.replace(cards, agents))

    async def run(self, ready: asyncio.Event | None = None) -> None:
        async with self._events.subscribe(CARDS_TOPIC, AGENTS_TOPIC, CALLS_TOPIC,
                                          TRANSCRIPTS_TOPIC) as sub:
            # Subscribed first, then loaded: an event published in between is applied
            # on top of the loaded state (every handler is idempotent), never lost.
            await self.reconcile()
            if ready is not None:
                ready.set()
            seen_dropped = 0
            while True:
                event = await sub.get()
                if sub.dropped != seen_dropped:
                    # The hub discarded events we were too slow to take: our picture
                    # has holes, so rebuild it from the store instead of guessing.
                    log.warning("dashboard feed lost %d events; reconciling",
                                sub.dropped - seen_dropped)
                    seen_dropped = sub.dropped
                    await self._guarded(self.reconcile, event)
                await self._guarded(functools.partial(self._apply, event), event)

    async def _guarded(self, step: Callable[[], Awaitable[None]], event: Event) -> None:
        # One bad event (a row deleted under us, a malformed payload) is logged and
        # skipped; the feed goes on serving every other card.
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await step()
        except Exception:
            log.exception("dashboard feed could not apply %r", event)
        elapsed = loop.time() - started
        if elapsed > LATENCY_BUDGET_S:
            log.warning("dashboard feed: %s took %.0f ms (budget %.0f ms)",
                        event.get("type"), elapsed * 1000, LATENCY_BUDGET_S * 1000)

    async def _apply(self, event: Event) -> None:
        kind = str(event.get("type"))
        handler = self._handlers.get(kind)
        if handler is None:
            return
        changes = await handler(event)
        if kind in BOARD_EVENTS:
            # The supervisor board lists every live call: it re-reads the list when one
            # starts, changes hands or ends (supervisors only; agents never see it).
            which = {"call_id": str(event["call_id"])} if "call_id" in event else {}
            changes = [*changes, Change("board_changed", which, SUPERVISORS)]
        # Published before anything else is awaited: the board already holds them.
        self._publish(changes)
        if kind in BOARD_EVENTS:
            self._publish(await self._busy_changes())

    async def _busy_changes(self) -> list[Change]:
        """Agents who became busy or free with this event (a card taken, a call over):
        their desks stop or start offering cards."""
        async with self._store.transaction() as tx:
            busy = await tx.agents.busy_agent_ids()
        changes: list[Change] = []
        for agent in list(self._board.agents.values()):
            if agent.busy != (agent.id in busy):
                changes += self._board.set_agent(dataclasses.replace(agent, busy=not agent.busy))
        return changes

    async def _offered(self, event: Event) -> list[Change]:
        handoff_id = int(event["handoff_id"])
        async with self._store.transaction() as tx:
            try:
                handoff = await tx.handoffs.get(handoff_id)
            except NotFound:
                return []
            if handoff.state is not HandoffState.OFFERED:
                # Accepted or withdrawn before we got here; its own event follows.
                return []
            card = await card_for(tx, handoff)
        return self._board.add_card(card)

    async def _withdrawn(self, event: Event) -> list[Change]:
        return self._board.remove_card(int(event["handoff_id"]), str(event.get("reason", "")))

    async def _taken(self, event: Event) -> list[Change]:
        agent_id = int(event["agent_id"])
        card = self._board.cards.get(int(event["handoff_id"]))
        if card is not None:
            self._agents_of_call.setdefault(card.call_id, set()).add(agent_id)
        taken_by = self._board.agents.get(agent_id) or await self._load_agent(agent_id)
        return self._board.remove_card(int(event["handoff_id"]), "taken", taken_by=taken_by)

    async def _call_changed(self, event: Event) -> list[Change]:
        agents = self._agents_of_call.get(str(event["call_id"]))
        if not agents:
            return []
        return [Change("call_changed", {"call_id": str(event["call_id"])},
                       Audience(frozenset(agents)))]

    async def _transcript(self, event: Event) -> list[Change]:
        # The line itself goes to the board (no store read: the AI talks several times a
        # second across fifty calls, and the sequential feed must keep up). Supervisors
        # only: an agent reads the transcript of their own call, in their panel.
        return [Change("transcript_line", {
            "call_id": str(event["call_id"]), "speaker": str(event["speaker"]),
            "text": str(event["text"]), "at": str(event["at"]),
        }, SUPERVISORS)]

    async def _call_ended(self, event: Event) -> list[Change]:
        self._agents_of_call.pop(str(event["call_id"]), None)
        changes: list[Change] = []
        for handoff_id in self._board.cards_of_call(str(event["call_id"])):
            changes += self._board.remove_card(handoff_id, "call_ended")
        return changes

    async def _agent_changed(self, event: Event) -> list[Change]:
        agent = await self._load_agent(int(event["agent_id"]))
        if agent is None:
            return []
        changes = self._board.set_agent(agent)
        on_calls = set().union(*self._agents_of_call.values()) - {agent.id}
        if changes and on_calls:
            # A colleague came on duty, went away or came back: the agents on calls pick
            # whom to transfer to from who is available, so their panels list afresh.
            changes.append(Change("colleagues_changed", {}, Audience(frozenset(on_calls))))
        return changes

    async def _load_agent(self, agent_id: int) -> AgentView | None:
        async with self._store.transaction() as tx:
            try:
                return await agent_view(tx, await tx.agents.get(agent_id),
                                        await tx.agents.busy_agent_ids())
            except NotFound:
                return None
