"""Commands from node B's desk and board on a call node A holds, on two fake PBXs
(handoff.live.node_requests): node B asks, node A carries the command out as if its own
dashboard had asked, and node B gets its answer, the same refusal included; a request
or reply lost on the way is sent again and carried out once; a node that does not answer
is said so. tests/integration/test_cluster_nodes.py runs a transfer and a take-over
across two real nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from handoff.agents import EndpointKind, Presence
from handoff.calls import CallOutcome, CallState
from handoff.events import NODES_TOPIC, EventHub, EventType, TypedEvent
from handoff.handoffs import HandoffState
from handoff.live import (
    AgentNotAvailable,
    CallStateConflict,
    LiveCall,
    NodeUnanswered,
    QueueNotAvailable,
)
from handoff.live.lines import LineState
from handoff.store import NotFound
from handoff.supervision import Mode, Supervisor
from tests.unit.test_live_calls import QUICK
from tests.unit.test_xnode import Nodes, _with_ai, two_nodes
from tests.waiting import until

# Requests sent again every 0.2 s; a node is given up on after 10 s (a loaded machine's
# SQLite takes its time), or one that never answers after one second.
TIMING = replace(QUICK, node_reply_s=10.0, node_resend_s=0.2)
DEAF_TIMING = replace(TIMING, node_reply_s=1.0)


class Lossy(EventHub):
    """A link between the nodes that loses the first event of each kind in ``kinds`` (a
    NOTIFY sent while it blips), or every one of them (``always``)."""

    def __init__(self, *kinds: EventType, always: bool = False) -> None:
        super().__init__()
        self.to_lose, self.always = set(kinds), always
        self.dropped: list[EventType] = []

    def publish(self, topic: str, event: TypedEvent) -> None:
        if event.kind in self.to_lose:
            if not self.always:
                self.to_lose.discard(event.kind)
            self.dropped.append(event.kind)
            return
        super().publish(topic, event)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    async with two_nodes(tmp_path, EventHub(), TIMING) as both:
        yield both


async def bob(nodes: Nodes) -> int:
    """Bob, on duty at his desk phone, registered to node B: his id."""
    async with nodes.store.transaction() as tx:
        agent = await tx.agents.create(login="bob", display_name="Bob", sip_user="bob-desk",
                                       sip_password="x", endpoint_kind=EndpointKind.DESKPHONE)
        await tx.agents.set_duty(agent.id, True)
        await tx.agents.set_presence(agent.id, Presence.AVAILABLE)
    nodes.b.registered.add("bob-desk")
    return agent.id


async def with_ada_on_a(nodes: Nodes) -> tuple[str, LiveCall, int]:
    """A caller on node A talking to Ada, who took the card on node A's desk."""
    caller = await nodes.a.caller_dials()
    live = await until(lambda: _with_ai(nodes.live_a, caller))
    handoff_id = await nodes.live_a.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")
    await nodes.live_a.control.accept(handoff_id, nodes.ada)
    await until(lambda: _handoff_in(nodes, handoff_id, HandoffState.CONNECTED))
    return caller, live, handoff_id


async def _handoff_in(nodes: Nodes, handoff_id: int, state: HandoffState) -> bool:
    return await nodes.state(handoff_id) is state


async def _transfers(nodes: Nodes, call_id: str) -> list[int]:
    async with nodes.store.transaction() as tx:
        return [h.id for h in await tx.handoffs.for_call(call_id) if h.reason == "transfer"]


async def test_node_b_s_commands_on_node_a_s_call_get_node_a_s_answers(nodes: Nodes) -> None:
    caller = await nodes.a.caller_dials()
    live = await until(lambda: _with_ai(nodes.live_a, caller))
    b = nodes.live_b.control
    # With the AI, nobody to transfer from nor to take back from: node A's refusals,
    # raised on node B as on one node (the desk answers 409, not 404).
    with pytest.raises(CallStateConflict) as refused:
        await b.transfer(live.call_id, nodes.ada, await bob(nodes), "")
    assert refused.value.state is CallState.WITH_AI
    with pytest.raises(CallStateConflict):
        await b.return_to_ai(live.call_id)
    # End: node A hangs its caller up and records the call.
    await b.end_call(live.call_id)
    await until(lambda: _ended(nodes, live.call_id))
    await until(lambda: caller not in nodes.a.chans or None)
    with pytest.raises(NotFound):  # ended: no node holds it (the desk answers 404)
        await b.return_to_ai(live.call_id)


async def _ended(nodes: Nodes, call_id: str) -> bool:
    async with nodes.store.transaction() as tx:
        call = await tx.calls.get(call_id)
    return call.state is CallState.ENDED and call.outcome is not None


async def test_a_transfer_asked_on_node_b_is_node_a_s_and_its_card_won_on_node_b_rings_there(
    tmp_path: Path,
) -> None:
    hub = Lossy()
    async with two_nodes(tmp_path, hub, TIMING) as nodes:
        bob_id = await bob(nodes)
        caller, live, first = await with_ada_on_a(nodes)
        b = nodes.live_b.control
        with pytest.raises(AgentNotAvailable):  # as on one node: not to herself
            await b.transfer(live.call_id, nodes.ada, nodes.ada, "")
        with pytest.raises(QueueNotAvailable) as no_queue:  # nor to a queue not there
            await b.transfer_to_queue(live.call_id, nodes.ada, 999, "")
        assert no_queue.value.why == "no such queue"
        # The link loses node B's next request and node A's next reply: node B sends it
        # again, and node A carries it out once (a second transfer would be refused: one
        # is on offer already) and answers it again.
        hub.to_lose = {EventType.NODE_REQUEST, EventType.NODE_REPLY}
        transfer = await b.transfer(live.call_id, nodes.ada, bob_id, "billing, not mine")
        assert hub.dropped == [EventType.NODE_REQUEST, EventType.NODE_REPLY]
        assert await _transfers(nodes, live.call_id) == [transfer]
        async with nodes.store.transaction() as tx:
            card = await tx.handoffs.get(transfer)
        assert (card.state, card.target_agent_id, card.note) == (
            HandoffState.OFFERED, bob_id, "billing, not mine")
        # Bob takes it on node B's desk, where his phone is: node A calls node B for
        # him on its node trunk, that leg ringing as the transfer's in the call bridge.
        node_leg = f"PJSIP/{transfer}@peer-node-b"
        nodes.a.phones[node_leg] = "ring"
        await b.accept(transfer, bob_id)
        leg = await until(lambda: _dialled(nodes, node_leg))
        await until(lambda: _handoff_in(nodes, transfer, HandoffState.CONNECTING))
        await nodes.a.answer_phone(leg)  # node B's 200 OK once Bob answered
        await until(lambda: _handoff_in(nodes, transfer, HandoffState.CONNECTED))
        assert (live.agent, live.agent_id) == (leg, bob_id)
        assert await nodes.state(first) is HandoffState.COMPLETED  # Ada's part is over
        await nodes.a.hang_up_phone(caller)


async def test_a_transfer_s_card_won_on_node_b_while_node_a_was_not_listening_fails(
    tmp_path: Path,
) -> None:
    hub = Lossy(EventType.NODE_ACCEPTED)  # the word that Bob won it never reaches node A
    async with two_nodes(tmp_path, hub, TIMING) as nodes:
        bob_id = await bob(nodes)
        caller, live, first = await with_ada_on_a(nodes)
        transfer = await nodes.live_a.control.transfer(live.call_id, nodes.ada, bob_id, "")
        await nodes.live_b.control.accept(transfer, bob_id)
        assert hub.dropped == [EventType.NODE_ACCEPTED]
        # Node A listens again: its hub says node events may have been missed.
        hub.lost(frozenset({NODES_TOPIC}))
        await until(lambda: _handoff_in(nodes, transfer, HandoffState.FAILED))
        await until(lambda: live.transfer is None or None)
        assert live.agent_id == nodes.ada  # Ada keeps him
        async with nodes.store.transaction() as tx:
            assert bob_id not in await tx.agents.busy_agent_ids()
        assert await nodes.state(first) is HandoffState.CONNECTED
        await nodes.a.hang_up_phone(caller)


async def _dialled(nodes: Nodes, endpoint: str) -> str | None:
    return next((leg for leg in nodes.a.dialled if leg in nodes.a.chans
                 and nodes.a.chans[leg].name.startswith(endpoint)), None)


async def test_node_b_says_so_when_node_a_does_not_answer(tmp_path: Path) -> None:
    hub = Lossy(EventType.NODE_REQUEST, always=True)  # node A never hears node B
    async with two_nodes(tmp_path, hub, DEAF_TIMING) as nodes:
        caller, live, _ = await with_ada_on_a(nodes)
        with pytest.raises(NodeUnanswered) as unanswered:
            await nodes.live_b.control.return_to_ai(live.call_id)
        assert unanswered.value.node == "node-a"
        # Sent again while unanswered, never past the bound.
        assert len(hub.dropped) > 1 and set(hub.dropped) == {EventType.NODE_REQUEST}
        assert live.agent_id == nodes.ada  # still Ada's
        await nodes.a.hang_up_phone(caller)


async def test_a_supervisor_on_node_b_s_board_listens_then_takes_over_node_a_s_call(
    nodes: Nodes,
) -> None:
    sue = Supervisor(await bob(nodes), "bob", "bob-desk")
    caller, live, first = await with_ada_on_a(nodes)
    board = nodes.live_b.supervision
    session = await board.supervise(live.call_id, sue, Mode.LISTEN)
    assert (session.call_id, session.mode) == (live.call_id, Mode.LISTEN)
    # Node A rang Bob's phone and holds the session (a Snoop on its caller).
    [held] = nodes.live_a.supervision.of_call(live.call_id)
    assert held.mode is Mode.LISTEN and held.snoop in nodes.a.chans
    await board.stop(live.call_id, sue)
    await until(lambda: not nodes.live_a.supervision.of_call(live.call_id))
    with pytest.raises(NotFound):  # as on one node: nothing to stop
        await board.stop(live.call_id, sue)
    taken = await board.supervise(live.call_id, sue, Mode.TAKE_OVER)
    assert taken.mode is Mode.TAKE_OVER and live.agent_id == sue.agent_id
    assert await nodes.state(first) is HandoffState.COMPLETED
    async with nodes.store.transaction() as tx:
        audit = [(e.actor, e.action, e.subject, e.detail.get("node"))
                 for e in await tx.audit.recent() if e.action in ("listen", "take_over")]
    assert sorted(audit) == [("bob", "listen", f"call:{live.call_id}", "node-a"),
                             ("bob", "take_over", f"call:{live.call_id}", "node-a")]
    await nodes.a.hang_up_phone(caller)
    await until(lambda: _ended(nodes, live.call_id))
    async with nodes.store.transaction() as tx:
        assert (await tx.calls.get(live.call_id)).outcome is CallOutcome.COMPLETED_BY_AGENT


async def test_a_supervisor_whose_open_line_node_b_holds_is_reached_through_node_b(
    nodes: Nodes,
) -> None:
    sue = Supervisor(await bob(nodes), "bob", "bob-desk")
    lines_b = nodes.live_b.control.lines
    await nodes.live_b.control.open_line(sue.agent_id, sue.sip_user, desk_phone=True)
    await until(lambda: lines_b.idle(sue.agent_id) or None)
    caller, live, _ = await with_ada_on_a(nodes)
    # Bob's phone is busy with his line on node B: node A calls node B for him (the
    # number names him, not a handoff), and node B moves his line onto that leg.
    through_b = f"PJSIP/0{sue.agent_id}@peer-node-b"
    nodes.a.phones[through_b] = "ring"
    asked = asyncio.create_task(nodes.live_b.supervision.supervise(live.call_id, sue,
                                                                   Mode.LISTEN))
    out = await until(lambda: _dialled(nodes, through_b))
    into_b = nodes.b._new("PJSIP/peer-node-a-00000001", "Ring",
                          app_args=["xnode", f"0{sue.agent_id}"])
    await nodes.b._started(into_b)
    await until(lambda: nodes.b.chans[into_b.id].state == "Up" or None)
    await nodes.a.answer_phone(out)  # node B's 200 OK reaches node A
    assert (await asyncio.wait_for(asked, 10)).mode is Mode.LISTEN
    line = lines_b.of(sue.agent_id)
    assert line is not None and line.state is LineState.ON_CALL
    assert [leg for leg in nodes.b.dialled
            if nodes.b.chans[leg].name.startswith("PJSIP/bob-desk")] == [line.leg]
    await nodes.live_b.supervision.stop(live.call_id, sue)
    # Node A hangs the leg between the nodes up; node B parks Bob's line again.
    await until(lambda: nodes.a.hangup_reasons.get(out) or None)
    await nodes.b._gone(into_b.id, {"soft": False, "cause": 16}, cause=16)
    await until(lambda: lines_b.idle(sue.agent_id) or None)
    await nodes.live_b.control.close_line(sue.agent_id, sue.sip_user)
    await nodes.a.hang_up_phone(caller)


async def test_off_duty_on_node_b_hangs_up_a_desk_line_node_a_holds(nodes: Nodes) -> None:
    line = await _desk_line_on_a(nodes)
    await nodes.live_b.control.close_line(nodes.ada, "ada-desk")
    await until(lambda: line not in nodes.a.chans)
    assert await _line_node(nodes) is None


async def test_a_desk_phone_that_hangs_up_its_idle_line_is_no_longer_held_by_the_node(
    nodes: Nodes,
) -> None:
    line = await _desk_line_on_a(nodes)
    await nodes.a.hang_up_phone(line)  # the handset put down on the idle line
    await until(lambda: _line_node_is(nodes, None))
    await nodes.live_a.control.close_line(nodes.ada, "ada-desk")  # off duty after


async def _desk_line_on_a(nodes: Nodes) -> str:
    await nodes.live_a.control.open_line(nodes.ada, "ada-desk", desk_phone=True)
    line = nodes.live_a.control.lines.of(nodes.ada)
    assert line is not None and line.leg in nodes.a.chans
    assert await _line_node(nodes) == "node-a"
    return line.leg


async def _line_node(nodes: Nodes) -> str | None:
    async with nodes.store.transaction() as tx:
        return (await tx.agents.get(nodes.ada)).line_node


async def _line_node_is(nodes: Nodes, expected: str | None) -> bool:
    return await _line_node(nodes) == expected
