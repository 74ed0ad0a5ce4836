"""A handoff across nodes on two fake PBXs (handoff.live.xnode): what each node's
controller does with the leg between them, and what that leg's end tells the caller's
node. tests/integration/test_cluster_nodes.py runs the whole on two real nodes; here, the
cases it does not: the agent's leg vanishing on node B, and a node leg for a handoff
that is no longer being accepted."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from handoff.agents import EndpointKind, Presence
from handoff.assistants import EngineKind
from handoff.calls import CallState
from handoff.controller import LiveServices, build_controller
from handoff.events import NODES_TOPIC, EventHub
from handoff.handoffs import FailureReason, HandoffState
from handoff.live import LiveCall, Timing
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.unit.fake_ari import FakeAri
from tests.unit.test_live_calls import QUICK, Engine
from tests.waiting import until


@dataclass
class Nodes:
    a: FakeAri  # the callers'
    b: FakeAri  # where Ada's phone is
    live_a: LiveServices
    live_b: LiveServices
    store: Store
    ada: int

    async def handoff_on_a(self) -> tuple[str, LiveCall, int]:
        caller = await self.a.caller_dials()
        live = await until(lambda: _with_ai(self.live_a, caller))
        handoff_id = await self.live_a.control.request_handoff(
            live.call_id, reason="caller_asked", summary="wants a person")
        # The leg to node B rings until node B answers it (the test carries the SIP).
        self.a.phones[f"PJSIP/{handoff_id}@peer-node-b"] = "ring"
        return caller, live, handoff_id

    async def state(self, handoff_id: int) -> HandoffState:
        async with self.store.transaction() as tx:
            return (await tx.handoffs.get(handoff_id)).state


async def _with_ai(live: LiveServices, caller: str) -> LiveCall | None:
    return next((c for c in live.control.calls.values() if c.caller == caller and c.ai), None)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    async with two_nodes(tmp_path, EventHub()) as both:
        yield both


@asynccontextmanager
async def two_nodes(tmp_path: Path, hub: EventHub, timing: Timing = QUICK
                    ) -> AsyncIterator[Nodes]:
    """Nodes A and B on one store, ``hub`` between them: in one process it carries what
    PostgreSQL's NOTIFY carries between nodes. Neither node is left a channel or bridge."""
    engine = create_store_engine(f"sqlite:///{tmp_path}/calls.db")
    await upgrade_to_head(engine)
    a, b = FakeAri(), FakeAri()
    store_a, store_b = Store(engine, node="node-a"), Store(engine, node="node-b")
    ada = await _seated(store_a)
    b.registered.add("ada-desk")
    live_a = build_controller(a, store_a, hub, timing=timing)
    live_b = build_controller(b, store_b, hub, timing=timing)
    try:
        yield Nodes(a, b, live_a, live_b, store_a, ada)
        for ari in (a, b):
            await ari.idle()
            assert not ari.chans and not ari.bridged, (ari.chans, ari.bridged)
    finally:
        for live, ari in ((live_a, a), (live_b, b)):
            await live.close()
            await ari.close()
        await engine.dispose()


async def _seated(store: Store) -> int:
    """The receptionist, and Ada on duty at her desk phone: her id."""
    async with store.transaction() as tx:
        await tx.assistants.create(name="receptionist", numbers=["2000"],
                                   engine=EngineKind.AUDIOSOCKET, engine_address=Engine().address,
                                   control_token_hash=hashlib.sha256(b"t").hexdigest())
        ada = await tx.agents.create(login="ada", display_name="Ada", sip_user="ada-desk",
                                     sip_password="x", endpoint_kind=EndpointKind.DESKPHONE)
        await tx.agents.set_duty(ada.id, True)
        await tx.agents.set_presence(ada.id, Presence.AVAILABLE)
    return ada.id


async def _dialled(ari: FakeAri, prefix: str) -> str | None:
    return next((leg for leg in ari.dialled if ari.chans.get(leg)
                 and ari.chans[leg].name.startswith(prefix)), None)


async def test_the_agent_s_leg_vanishing_on_node_b_gives_the_caller_back_to_the_ai(
    nodes: Nodes,
) -> None:
    caller, live, handoff_id = await nodes.handoff_on_a()
    await nodes.live_b.control.accept(handoff_id, nodes.ada)  # on node B's desk
    out = await until(lambda: _dialled(nodes.a, f"PJSIP/{handoff_id}@peer-node-b"))
    # Node B's Asterisk takes the INVITE: the leg enters its app for that handoff.
    into_b = nodes.b._new("PJSIP/peer-node-a-00000001", "Ring",
                          app_args=["xnode", str(handoff_id)])
    await nodes.b._started(into_b)
    ada_leg = await until(lambda: _dialled(nodes.b, "PJSIP/ada-desk"))
    await until(lambda: nodes.b.chans[into_b.id].state == "Up" or None)
    await nodes.a.answer_phone(out)  # node B's 200 OK reaches node A
    await until(lambda: _is(nodes.state(handoff_id), HandoffState.CONNECTED))

    # Ada's leg goes silent on node B: node B ends the leg between the nodes as a
    # failure (not normal clearing), which node A reads as an agent who vanished.
    await nodes.b.lose_phone(ada_leg)
    await until(lambda: nodes.b.hangup_reasons.get(into_b.id) == "failure" or None)
    await nodes.b._gone(into_b.id, {"soft": True, "cause": 32}, cause=16)
    await nodes.a._gone(out, {"soft": False, "cause": 38}, cause=38)
    await until(lambda: _is(nodes.state(handoff_id), HandoffState.FAILED))
    async with nodes.store.transaction() as tx:
        assert (await tx.handoffs.get(handoff_id)).failure_reason is \
            FailureReason.AGENT_VANISHED
        call = await tx.calls.get(live.call_id)
    assert call.state in (CallState.WITH_AI, CallState.HANDOFF_PENDING)  # and offered again
    await until(lambda: live.ai)
    await nodes.a.hang_up_phone(caller)


async def test_a_node_leg_for_a_handoff_no_longer_being_accepted_is_refused(
    nodes: Nodes,
) -> None:
    caller, _, handoff_id = await nodes.handoff_on_a()
    await nodes.live_b.control.accept(handoff_id, nodes.ada)
    await until(lambda: _dialled(nodes.a, f"PJSIP/{handoff_id}@peer-node-b"))
    # The caller gives up while node A calls node B; its INVITE reaches node B late.
    await nodes.a.hang_up_phone(caller)
    await until(lambda: _over(nodes, handoff_id))
    into_b = nodes.b._new("PJSIP/peer-node-a-00000001", "Ring",
                          app_args=["xnode", str(handoff_id)])
    await nodes.b._started(into_b)
    await until(lambda: nodes.b.hangup_reasons.get(into_b.id) == "unallocated" or None)
    assert not await _dialled(nodes.b, "PJSIP/ada-desk")  # Ada's phone did not ring


async def _over(nodes: Nodes, handoff_id: int) -> bool:
    return await nodes.state(handoff_id) not in (HandoffState.ACCEPTED,
                                                 HandoffState.CONNECTING)


async def _is(value: Awaitable[object], expected: object) -> bool:
    return bool(await value == expected)


async def test_a_card_won_on_node_b_while_node_a_was_not_listening_is_offered_again(
    tmp_path: Path,
) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path}/calls.db")
    await upgrade_to_head(engine)
    # Two hubs never joined: node B's word that Ada won the card never reaches node A,
    # as when node A's link to the shared events was down.
    hub_a, a = EventHub(), FakeAri()
    store_a, store_b = Store(engine, node="node-a"), Store(engine, node="node-b")
    ada = await _seated(store_a)
    live_a = build_controller(a, store_a, hub_a, timing=QUICK)
    try:
        caller = await a.caller_dials()
        live = await until(lambda: _with_ai(live_a, caller))
        first = await live_a.control.request_handoff(live.call_id, reason="caller_asked",
                                                     summary="wants a person")
        async with store_b.transaction() as tx:  # node B's accept, as its controller does
            await tx.handoffs.accept(first, ada)
        # Node A listens again: its hub says node events may have been missed.
        hub_a.lost(frozenset({NODES_TOPIC}))
        await until(lambda: _failed_as(store_a, first, FailureReason.AGENT_LEG_FAILED))
        again = await until(lambda: live.handoff_id if live.handoff_id != first else None)
        async with store_a.transaction() as tx:
            assert (await tx.handoffs.get(again)).state is HandoffState.OFFERED
            assert ada not in await tx.agents.busy_agent_ids()  # Ada is free again
        await a.hang_up_phone(caller)
        await a.idle()
    finally:
        await live_a.close()
        await a.close()
        await engine.dispose()


async def _failed_as(store: Store, handoff_id: int, reason: FailureReason) -> bool:
    async with store.transaction() as tx:
        return (await tx.handoffs.get(handoff_id)).failure_reason is reason
