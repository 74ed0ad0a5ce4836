"""The dashboards' live channel without sockets: numbering, resume, visibility, and what
happens to a tab that stops reading (R11). Fake peers with controlled futures."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from handoff.agents import AgentRole, Presence
from handoff.events import (
    AGENTS_TOPIC,
    CALLS_TOPIC,
    CARDS_TOPIC,
    AgentChanged,
    CallChanged,
    CallEnded,
    EventHub,
    EventType,
    Offered,
    Taken,
    TranscriptLine,
    TypedEvent,
    publish_transcript_line,
)
from handoff.store import Store
from handoff.store.models import Agent
from tests.dashboard_fixtures import offer_card
from tests.waiting import until
from web.dashboard.board import AgentView, Board, Card, Change
from web.dashboard.feed import Feed
from web.dashboard.hub import Client, CloseCode, DashboardHub, HubLimits, Resume

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def card(handoff_id: int, *, target: int | None = None, priority: int = 0) -> Card:
    return Card(handoff_id=handoff_id, call_id=f"call-{handoff_id}", caller_number="+3312",
                caller_name="Jeanne", summary="invoice", reason="caller_request", topic=None,
                priority=priority, attempt=1, waiting_since=T0, target_agent_id=target)


async def agents(store: Store, *logins: str) -> list[Agent]:
    """Agents in the store, off duty: "bob" is Bob, with SIP user sb-bob."""
    async with store.transaction() as tx:
        return [await tx.agents.create(login=login, display_name=login.title(),
                                       sip_user=f"sb-{login}", sip_password="x")
                for login in logins]


def queued(client: Client) -> list[dict[str, Any]]:
    messages = []
    while not client._queue.empty():
        messages.append(json.loads(client._queue.get_nowait()))
    return messages


def new_hub(**limits: Any) -> DashboardHub:
    board = Board()
    board.set_agent(AgentView(1, "alice", "Alice", AgentRole.AGENT, True, Presence.AVAILABLE,
                              False))
    return DashboardHub(board, limits=HubLimits(**limits), clock=lambda: T0)


def join(hub: DashboardHub, agent_id: int = 1, role: AgentRole = AgentRole.AGENT,
         resume: Resume | None = None) -> Client:
    return hub.connect(agent_id=agent_id, role=role, session_hash=f"s{agent_id}",
                       resume=resume or Resume())


class RecordingPeer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def send_str(self, data: str) -> None:
        self.sent.append(json.loads(data))
        self.arrived.set()


class StalledPeer:
    """A tab whose TCP window is shut: the first frame never leaves."""

    def __init__(self) -> None:
        self.never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send_str(self, data: str) -> None:
        await self.never


async def forever() -> None:
    await asyncio.Event().wait()


# ---- snapshot and numbering ------------------------------------------------------------


async def test_a_new_tab_gets_a_snapshot_then_numbered_deltas() -> None:
    hub = new_hub()
    hub.publish(hub.board.add_card(card(7)))
    tab = join(hub)
    hub.publish(hub.board.add_card(card(8)))
    hub.publish(hub.board.remove_card(7, "taken"))
    snapshot, *deltas = queued(tab)
    assert snapshot["type"] == "snapshot"
    assert snapshot["seq"] == hub.seq - 2
    assert [c["handoff_id"] for c in snapshot["cards"]] == [7]
    assert snapshot["me"]["login"] == "alice"
    assert [(d["seq"], d["op"]) for d in deltas] == [
        (snapshot["seq"] + 1, "card_added"), (snapshot["seq"] + 2, "card_removed")]


async def test_a_reconnecting_tab_gets_only_the_deltas_it_missed() -> None:
    hub = new_hub()
    first = join(hub)
    seen = queued(first)[-1]["seq"]
    hub.disconnect(first)
    hub.publish(hub.board.add_card(card(1)))
    hub.publish(hub.board.add_card(card(2)))
    again = join(hub, resume=Resume(seen, hub.epoch))
    resumed, *missed = queued(again)
    assert resumed == {"type": "resumed", "seq": hub.seq, "epoch": hub.epoch, "replayed": 2}
    assert [m["card"]["handoff_id"] for m in missed] == [1, 2]


async def test_a_tab_too_far_behind_or_from_another_process_gets_a_snapshot() -> None:
    hub = new_hub(replay=2)
    for n in range(1, 6):
        hub.publish(hub.board.add_card(card(n)))
    behind = join(hub, resume=Resume(1, hub.epoch))
    other_process = join(hub, resume=Resume(hub.seq, "an-older-epoch"))
    from_the_future = join(hub, resume=Resume(hub.seq + 10, hub.epoch))
    for tab in (behind, other_process, from_the_future):
        (message,) = queued(tab)
        assert message["type"] == "snapshot"
        assert len(message["cards"]) == 5


async def test_a_card_for_one_agent_reaches_only_that_agent_and_supervisors() -> None:
    hub = new_hub()
    alice, bob = join(hub, 1), join(hub, 2)
    sam = join(hub, 3, AgentRole.SUPERVISOR)
    hub.publish(hub.board.add_card(card(9, target=1)))
    assert [m["op"] for m in queued(alice)[1:]] == ["card_added"]
    assert queued(bob)[1:] == []
    assert [m["op"] for m in queued(sam)[1:]] == ["card_added"]
    assert queued(join(hub, 2))[0]["cards"] == []  # nor does a fresh snapshot for bob


async def test_snapshot_orders_cards_most_urgent_then_longest_waiting() -> None:
    hub = new_hub()
    for handoff_id, priority in ((1, 0), (2, 5), (3, 0)):
        hub.publish(hub.board.add_card(card(handoff_id, priority=priority)))
    (snapshot,) = queued(join(hub))
    assert [c["handoff_id"] for c in snapshot["cards"]] == [2, 1, 3]


# ---- slow and stalled tabs (R11) -------------------------------------------------------


async def test_a_stalled_tab_is_dropped_and_never_delays_the_others() -> None:
    hub = new_hub(queue=8, send_timeout_s=30.0)
    fast_peer, stalled_peer = RecordingPeer(), StalledPeer()
    fast, stalled = join(hub, 1), join(hub, 2)
    serving = [asyncio.create_task(fast.serve(fast_peer, forever(), 30.0)),
               asyncio.create_task(stalled.serve(stalled_peer, forever(), 30.0))]
    await asyncio.sleep(0)  # both writers take their snapshot; the stalled one hangs on it
    # publish() is synchronous: it cannot wait for any socket, stalled or not. Between
    # two domain events the loop turns (the feed reads the store), and healthy writers
    # drain their queues then.
    for n in range(50):
        hub.publish([Change("card_added", {"card": card(n).to_json()})])
        await asyncio.sleep(0)
    assert stalled not in hub.clients
    assert stalled.close_code == CloseCode.RESYNC
    await asyncio.wait_for(serving[1], 1.0)  # its handler ends and closes the socket

    async def fast_has_everything() -> None:
        while len(fast_peer.sent) < 51:
            fast_peer.arrived.clear()
            await fast_peer.arrived.wait()

    await asyncio.wait_for(fast_has_everything(), 1.0)
    assert [m["seq"] for m in fast_peer.sent[1:]] == list(range(1, 51))
    fast.stop(CloseCode.GOING_AWAY, "")
    await asyncio.wait_for(serving[0], 1.0)


class RawSocket:
    """The connection under a tab's WebSocket: frames written to it are decoded here."""

    def __init__(self, buffered: int = 0) -> None:
        self.frames: list[dict[str, Any]] = []
        self.buffered = buffered  # bytes the kernel has not taken yet

    def write(self, data: bytes) -> None:
        assert data[0] == 0x81  # one whole text frame
        size, start = data[1], 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10], "big"), 10
        assert len(data) == start + size
        self.frames.append(json.loads(data[start:]))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


async def test_an_idle_tab_gets_deltas_written_straight_to_its_socket_in_order() -> None:
    hub = new_hub()
    raw, peer = RawSocket(), RecordingPeer()
    tab = hub.connect(agent_id=1, role=AgentRole.AGENT, session_hash="s1", resume=Resume(),
                      raw=raw)
    # The snapshot is still queued: deltas queue behind it instead of overtaking it.
    hub.publish([Change("card_added", {"card": card(1).to_json()})])
    assert raw.frames == []
    serving = asyncio.create_task(tab.serve(peer, forever(), 5.0))
    while len(peer.sent) < 2:
        peer.arrived.clear()
        await peer.arrived.wait()
    await asyncio.sleep(0)
    # Now idle: the next deltas go straight to the socket, framed once for everyone.
    for n in (2, 3):
        hub.publish([Change("card_added", {"card": card(n).to_json()})])
    assert [m["type"] for m in peer.sent] == ["snapshot", "delta"]
    assert [m["seq"] for m in peer.sent[1:] + raw.frames] == [1, 2, 3]
    tab.stop(CloseCode.GOING_AWAY, "")
    await asyncio.wait_for(serving, 1.0)


async def test_a_tab_whose_socket_buffer_is_full_is_dropped() -> None:
    hub = new_hub(unsent_bytes=1000)
    raw = RawSocket(buffered=5000)  # the tab stopped reading long ago
    tab = hub.connect(agent_id=1, role=AgentRole.AGENT, session_hash="s1", resume=Resume(),
                      raw=raw)
    tab._queue.get_nowait()  # its snapshot left earlier
    hub.publish([Change("card_added", {"card": card(1).to_json()})])
    assert tab not in hub.clients
    assert tab.close_code == CloseCode.RESYNC
    assert raw.frames == []


async def test_a_tab_whose_socket_takes_no_frame_within_the_send_timeout_is_dropped() -> None:
    hub = new_hub(send_timeout_s=0.05)
    tab = join(hub)
    await asyncio.wait_for(tab.serve(StalledPeer(), forever(), 0.05), 1.0)
    assert tab.close_code == CloseCode.RESYNC


async def test_signing_out_closes_that_sessions_tabs_only() -> None:
    hub = new_hub()
    mine, other = join(hub, 1), join(hub, 2)
    assert hub.drop_session("s1") == 1
    assert mine.close_code == CloseCode.SIGNED_OUT and mine.stopped
    assert not other.stopped


# ---- the feed from the domain ----------------------------------------------------------


@contextlib.asynccontextmanager
async def running_feed(
    store: Store, events: EventHub, board: Board, publish: Callable[[list[Change]], None]
) -> AsyncIterator[None]:
    """A feed running (subscribed and reconciled) for the block, then stopped."""
    ready = asyncio.Event()
    running = asyncio.create_task(Feed(store, events, board, publish).run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 5.0)
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def all_applied(events: EventHub, sent: list[Change]) -> None:
    """Return once the feed has applied every event published so far. It applies them one
    at a time in the order published, so a marker published now shows last: a change to
    a call nobody has, which only the supervisors' board hears of."""
    marker = f"marker-{uuid.uuid4().hex}"
    events.publish(CALLS_TOPIC, CallChanged(marker))
    await until(lambda: any(c.op == "board_changed" and c.body == {"call_id": marker}
                            for c in sent), 5)


async def test_the_feed_builds_cards_from_the_store_and_follows_the_controllers_events(
    store: Store,
) -> None:
    events, board = EventHub(), Board()
    sent: list[Change] = []
    [winner] = await agents(store, "bob")
    before = await offer_card(store, events, caller_name="Early Caller", publish=False)
    async with running_feed(store, events, board, sent.extend):
        assert list(board.cards) == [before.id]  # offered before we started: reconciled
        live = await offer_card(store, events, caller_name="Late Caller", priority=5)
        await until(lambda: live.id in board.cards)
        assert board.cards[live.id].caller_name == "Late Caller"
        assert board.cards[live.id].summary == "Disputes an invoice"
        events.publish(CARDS_TOPIC, Taken(live.id, winner.id))
        await until(lambda: live.id not in board.cards)
        removed = [c for c in sent if c.op == "card_removed"]
        assert removed[-1].body["taken_by"] == {"id": winner.id, "display_name": "Bob"}
        events.publish(CARDS_TOPIC, CallEnded(before.call_id))
        await until(lambda: board.cards == {})


async def test_a_transcript_line_reaches_the_supervisors_board_and_no_agent(
    store: Store,
) -> None:
    events, board = EventHub(), Board()
    sent: list[Change] = []
    [bob] = await agents(store, "bob")
    async with running_feed(store, events, board, sent.extend):
        call = await offer_card(store, events)
        line = TranscriptLine(call.call_id, "ai", "Let me find a person for you.",
                              "2026-12-01T21:00:00+00:00")
        publish_transcript_line(events, line)
        await until(lambda: any(c.op == "transcript_line" for c in sent))
    [change] = [c for c in sent if c.op == "transcript_line"]
    assert change.body == {"call_id": call.call_id, "speaker": "ai",
                           "text": "Let me find a person for you.",
                           "at": "2026-12-01T21:00:00+00:00"}
    assert change.audience.includes(7, AgentRole.SUPERVISOR)
    assert change.audience.includes(7, AgentRole.ADMIN)
    assert not change.audience.includes(bob.id, AgentRole.AGENT)


async def test_a_change_on_a_call_reaches_the_panel_of_the_agent_who_took_it(
    store: Store,
) -> None:
    events, board = EventHub(), Board()
    sent: list[Change] = []
    [bob] = await agents(store, "bob")
    async with running_feed(store, events, board, sent.extend):
        quiet = await offer_card(store, events)  # nobody took this one
        taken = await offer_card(store, events)
        await until(lambda: taken.id in board.cards)
        events.publish(CARDS_TOPIC, Taken(taken.id, bob.id))
        events.publish(CALLS_TOPIC, CallChanged(quiet.call_id))
        events.publish(CALLS_TOPIC, CallChanged(taken.call_id))
        await until(lambda: any(c.op == "call_changed" for c in sent))
        [change] = [c for c in sent if c.op == "call_changed"]
        assert change.body == {"call_id": taken.call_id}
        assert change.audience.includes(bob.id, AgentRole.AGENT)
        assert not change.audience.includes(bob.id + 1, AgentRole.AGENT)  # another agent
        assert change.audience.includes(bob.id + 1, AgentRole.SUPERVISOR)
        # After the call, its changes go nowhere.
        events.publish(CARDS_TOPIC, CallEnded(taken.call_id))
        events.publish(CALLS_TOPIC, CallChanged(taken.call_id))
        await all_applied(events, sent)
        assert len([c for c in sent if c.op == "call_changed"]) == 1


async def test_agents_on_calls_hear_when_a_colleague_comes_on_duty(store: Store) -> None:
    events, board = EventHub(), Board()
    sent: list[Change] = []
    bob, carol = await agents(store, "bob", "carol")
    async with running_feed(store, events, board, sent.extend):
        taken = await offer_card(store, events)
        await until(lambda: taken.id in board.cards)
        events.publish(CARDS_TOPIC, Taken(taken.id, bob.id))
        async with store.transaction() as tx:
            await tx.agents.set_duty(carol.id, True)
            await tx.agents.set_presence(carol.id, Presence.AVAILABLE)
        events.publish(AGENTS_TOPIC, AgentChanged(carol.id))
        await until(lambda: any(c.op == "colleagues_changed" for c in sent))
        [change] = [c for c in sent if c.op == "colleagues_changed"]
        assert change.audience.includes(bob.id, AgentRole.AGENT)
        assert not change.audience.includes(carol.id, AgentRole.AGENT)
        # The same picture again (nothing changed) sends nothing.
        events.publish(AGENTS_TOPIC, AgentChanged(carol.id))
        await all_applied(events, sent)
        assert len([c for c in sent if c.op == "colleagues_changed"]) == 1


async def test_the_supervisor_board_hears_of_every_live_call_change(store: Store) -> None:
    events, board = EventHub(), Board()
    sent: list[Change] = []
    async with running_feed(store, events, board, sent.extend):
        events.publish(CALLS_TOPIC, CallChanged("call-started"))  # no agent on it yet
        await until(lambda: any(c.op == "board_changed" for c in sent))
        [change] = [c for c in sent if c.op == "board_changed"]
        assert change.body == {"call_id": "call-started"}
        assert change.audience.includes(7, AgentRole.SUPERVISOR)
        assert not change.audience.includes(7, AgentRole.AGENT)
        assert not [c for c in sent if c.op == "call_changed"]  # no agent panel to update


async def test_a_bad_event_is_logged_and_the_feed_goes_on(store: Store) -> None:
    events, board = EventHub(), Board()
    async with running_feed(store, events, board, lambda _changes: None):
        events.publish(CARDS_TOPIC, _OfferedWithoutIds())
        events.publish(CARDS_TOPIC, Offered("no-such-call", 424242))  # no such row
        handoff = await offer_card(store, events)
        await until(lambda: handoff.id in board.cards)


@dataclasses.dataclass(frozen=True)
class _OfferedWithoutIds(TypedEvent):
    """An "offered" that lost its ids on the way: no producer sends one, the feed must
    survive it anyway."""

    kind: ClassVar[EventType] = EventType.OFFERED
