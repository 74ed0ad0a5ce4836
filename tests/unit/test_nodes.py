"""Nodes' leases on the real store (SQLite and PostgreSQL): a node keeps its calls while
it renews, and exactly one survivor ends them as ``pbx_lost`` once its lease expired."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.calls import CallOutcome, CallState
from handoff.controller import build_controller
from handoff.events import CARDS_TOPIC, EventHub, EventType
from handoff.handoffs import FailureReason, HandoffState
from handoff.live.reconcile import close_unheard
from handoff.nodes import NodeLease
from handoff.store import Store
from handoff.store.models import Handoff, Node
from handoff.store.transitions import utc_now
from tests.store_fixtures import FakeClock
from tests.unit.fake_ari import FakeAri
from tests.unit.test_live_calls import Floor, floor
from tests.waiting import until
from web.app import running
from web.bench.dashboard_site import offer_card
from web.services import Controller

__all__ = ["floor"]

LEASE_S = 9.0


def node_store(engine: AsyncEngine, clock: FakeClock, name: str) -> Store:
    return Store(engine, clock, node=name)


async def taken_card(store: Store, hub: EventHub, number: str) -> Handoff:
    """A call on ``store``'s node whose card an agent has accepted: that agent is busy."""
    handoff = await offer_card(store, hub, caller_number=number, publish=False)
    async with store.transaction() as tx:
        agent = await tx.agents.create(login=f"a{number[-4:]}", display_name="Ada",
                                       sip_user=f"sip{number[-4:]}", sip_password="x")
        await tx.agents.set_duty(agent.id, True)
        return await tx.handoffs.accept(handoff.id, agent.id)


async def test_a_node_keeps_its_calls_while_it_renews_and_one_survivor_ends_them_once_it_lapses(
    engine: AsyncEngine, clock: FakeClock,
) -> None:
    a, b, c = (node_store(engine, clock, name) for name in ("node-a", "node-b", "node-c"))
    hub = EventHub()
    returned: list[str] = []

    async def came_back() -> None:
        returned.append("hung up what was left")

    leases = {
        name: NodeLease(store, hub, lease_s=LEASE_S,
                        taken_over=came_back if name == "node-a" else None)
        for name, store in (("node-a", a), ("node-b", b), ("node-c", c))
    }
    for lease in leases.values():
        await lease.hold()
    on_a = await taken_card(a, hub, "+33100000001")
    on_b = await taken_card(b, hub, "+33100000002")
    async with a.transaction() as tx:
        assert (await tx.calls.get(on_a.call_id)).node == "node-a"
        assert [call.id for call in await tx.calls.open_calls(node="node-b")] == [on_b.call_id]
        assert len(await tx.calls.open_calls()) == 2  # a single box's view: every call
    # A supervisor listens to each call, each session held by the call's node.
    supervisor = on_b.accepted_by
    assert supervisor is not None
    for store, handoff in ((a, on_a), (b, on_b)):
        async with store.transaction() as tx:
            await tx.supervisions.hold(handoff.call_id, supervisor, "listen", store.node)

    # A renewal before the lease runs out: nobody may take node A's calls.
    clock.advance(LEASE_S - 1)
    await leases["node-a"].hold()
    clock.advance(LEASE_S - 1)
    await leases["node-b"].hold()
    await leases["node-c"].hold()
    assert await leases["node-b"].take_over() == []

    # Node A stops renewing; once its lease has run out, B and C look at the same time.
    clock.advance(2)
    async with hub.subscribe(CARDS_TOPIC) as cards:
        ended = await asyncio.gather(leases["node-b"].take_over(),
                                     leases["node-c"].take_over())
        assert sorted(ended, key=len) == [[], [on_a.call_id]]
        news = await cards.get()
        assert (news["type"], news["call_id"]) == (EventType.CALL_ENDED, on_a.call_id)
    async with a.transaction() as tx:
        call = await tx.calls.get(on_a.call_id)
        assert (call.state, call.outcome, call.end_cause) == (
            CallState.ENDED, CallOutcome.PBX_LOST, "node node-a lost")
        handoff = await tx.handoffs.get(on_a.id)
        assert (handoff.state, handoff.failure_reason) == (HandoffState.FAILED,
                                                           FailureReason.PBX_LOST)
        # A's agent is free again; B's call and its agent are untouched.
        assert await tx.agents.busy_agent_ids() == {on_b.accepted_by}
        assert (await tx.calls.get(on_b.call_id)).state is not CallState.ENDED
        lost = {node.name: node.lost_to for node in await tx.nodes.all()}
        assert lost["node-a"] in {"node-b", "node-c"} and lost["node-b"] is None
        # The lost node's supervision session is off every board; B's stays.
        assert [(r.call_id, r.node) for r in await tx.supervisions.of_supervisor(
            supervisor)] == [(on_b.call_id, "node-b")]
        assert await tx.supervisions.drop_node("node-a") == 0

    # A's controller comes back: it learns its calls were taken, once.
    await leases["node-a"].hold()
    assert returned == ["hung up what was left"]
    await leases["node-a"].hold()
    assert returned == ["hung up what was left"]
    assert await leases["node-b"].take_over() == []


# Row locks that outlive their client are PostgreSQL's (SQLite's writers lock the file,
# with a busy timeout): this case exists on PostgreSQL only.
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_a_survivor_keeps_renewing_while_a_lost_node_s_rows_stay_locked(
    engine: AsyncEngine,
) -> None:
    """Node A's host died in a transaction that locked its lease's row (the server drops
    such a connection only seconds later): node B's look at A gives up on the lock
    instead of waiting, so B renews its own lease on time meanwhile (waiting, B would
    look lost itself); once the row is free, B ends A's calls."""
    a, b = Store(engine, node="node-a"), Store(engine, node="node-b")
    async with a.transaction() as tx:
        await tx.nodes.renew("node-a", timedelta(seconds=-1))  # lapsed already
    on_a = await offer_card(a, EventHub(), publish=False)
    survivor = NodeLease(b, EventHub(), lease_s=0.9)
    await survivor.hold()

    async def renewed_since(since: datetime) -> datetime | None:
        async with b.transaction() as tx:
            at = next(n.renewed_at for n in await tx.nodes.all() if n.name == "node-b")
        return at if at > since else None

    async with engine.connect() as dead, dead.begin():
        # A's last transaction, never ended: its lease's row stays locked.
        await dead.execute(select(Node).where(Node.name == "node-a").with_for_update())
        locked_at = utc_now()
        async with running(survivor.run(), "node-b's lease"):
            # Twice: B's first look at A comes between these two renewals.
            first = await until(lambda: renewed_since(locked_at), 10, step=0.05,
                                why="node B never renewed")
            await until(lambda: renewed_since(first), 10, step=0.05,
                        why="node B stopped renewing while node A's row was locked")
            async with b.transaction() as tx:
                assert (await tx.calls.get(on_a.call_id)).state is not CallState.ENDED
            await dead.rollback()  # the server dropped A's connection

            async def ended() -> bool:
                async with b.transaction() as tx:
                    return (await tx.calls.get(on_a.call_id)).outcome is CallOutcome.PBX_LOST

            await until(ended, 10, step=0.05, why="node B never ended node A's call")


async def test_a_restarted_controller_reconciles_only_its_own_nodes_calls(
    engine: AsyncEngine, clock: FakeClock,
) -> None:
    """Node B's controller restarts while node A holds a call: B's Asterisk does not have
    A's caller, yet the call is not B's to close."""
    a, b = node_store(engine, clock, "node-a"), node_store(engine, clock, "node-b")
    on_a = await offer_card(a, EventHub(), publish=False)
    ari = FakeAri()
    live = build_controller(ari, b, EventHub())
    try:
        await live.control.reconcile()
    finally:
        await live.close()
        await ari.close()
    async with a.transaction() as tx:
        assert (await tx.calls.get(on_a.call_id)).state is CallState.HANDOFF_PENDING
        assert (await tx.handoffs.get(on_a.id)).state is HandoffState.OFFERED


async def test_a_clusters_node_takes_a_phone_its_asterisk_lacks_for_one_on_another_node(
) -> None:
    """Bea's browser phone registers to node A: node B's Asterisk does not have it, which
    must not set her away nor keep her off duty (a single box's PBX knows every phone).
    A desk phone registers to the edge, which every node asks."""

    class Pbx:
        async def phone_registered(self, sip_user: str) -> bool | None:
            return sip_user == "desk-here"

    controller = Controller()
    controller.control = Pbx()  # type: ignore[assignment]
    assert await controller.phone_registered("desk-elsewhere") is False
    controller.cluster_node = True
    assert await controller.phone_registered("desk-elsewhere") is None
    assert await controller.phone_registered("desk-here") is True
    # A desk phone registered to the edge is asked of the edge (by every node alike):
    # its "unregistered" is definite.
    controller.through_edge = lambda sip_user: sip_user.startswith("desk-")
    assert await controller.phone_registered("desk-elsewhere") is False


async def test_a_node_whose_calls_a_survivor_ended_hangs_up_what_is_left_of_them(
    floor: Floor,
) -> None:
    """This node's lease lapsed (its database link was cut) and another node ended its
    call as pbx_lost; told so on renewing, it hangs up the caller, records nothing more,
    and leaves no leg or bridge behind (the fixture checks)."""
    caller, live = await floor.call()
    async with floor.store.transaction() as tx:
        await close_unheard(tx, live.call_id, CallOutcome.PBX_LOST, "node node-a lost",
                            FailureReason.PBX_LOST)
    await floor.live.control.hang_up_taken_over()
    assert caller not in floor.ari.chans
    assert live.call_id not in floor.live.control.calls
    assert await floor.outcome(live.call_id) is CallOutcome.PBX_LOST
