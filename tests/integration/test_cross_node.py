"""A handoff across nodes: the caller on node A, the agent's desk phone on node B, through
a SIP leg between the two nodes' Asterisks (handoff.live.xnode).

Real parts throughout, as in test_cluster_nodes: Kamailio (Debian's) in front of two
`switchboard run` nodes on one PostgreSQL, each with its embedded Asterisk and its
controller, a carrier Asterisk placing the calls, and Cid's SIP desk phone registered
to node B only. Cid takes the card on node B's desk; node A's controller calls node B
for him; both directions are heard; Cid gives the caller back to the AI from node B's
desk; the caller hangs up and node A records the call, its recording holding Cid's
voice too. Then Cid's desk phone keeps an open line on node B: Accept moves it into the
node leg's bridge there, and Cid putting the handset down ends the call as his. Nothing
is left on either node.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from handoff.agents import EndpointKind
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Call
from handoff.trunks import Trunk
from pbx import runtime
from pbx.edge import Edge
from pbx.kamailio_config import EdgeNode, EdgeSpec
from pbx.ports import free_port
from tests.integration.test_cluster_edge import edge_port
from tests.integration.test_cluster_nodes import (
    _cards,
    _dispatching,
    _handoff_is,
    _tell_why,
    ask_for_person,
    carrier_world,
    place_with_ai,
    rows,
)
from tests.integration.test_external_asterisk import ari, database, offered
from tests.integration.test_handoff_move import recorded_parties
from tests.product_run import Product, stopped_after
from tests.sip_phone import SipPhone
from tests.waiting import until
from web.bench.dashboard_site import PASSWORD, Browser, cheap_passwords
from web.bench.world import World

__all__ = ["database"]

pytestmark = pytest.mark.integration

NODES = ("node-a", "node-b")


def cluster_file(folder: Path, edge: int, sip: dict[str, int]) -> Path:
    """The `[cluster]` settings every node reads: the edge and both nodes' SIP addresses
    (each node's Asterisk gets a trunk to the other from them)."""
    nodes = "".join(f'\n[[cluster.nodes]]\nname = "{name}"\nsip_host = "127.0.0.1"\n'
                    f"sip_port = {port}\n" for name, port in sip.items())
    path = folder / "cluster.toml"
    path.write_text(f'[cluster]\nedge_address = "127.0.0.1"\nedge_port = {edge}\n'
                    f'carriers = ["127.0.0.1"]\nlease_s = 5\n{nodes}')
    return path


async def test_a_caller_on_node_a_is_handed_to_an_agent_whose_phone_is_on_node_b(
    database: str, installation: runtime.Installation, state_dir: Path, tmp_path: Path,
) -> None:
    port = edge_port(frozenset())
    sip = {name: free_port(socket.SOCK_DGRAM, frozenset({port})) for name in NODES}
    assert len({port, *sip.values()}) == 3
    settings = cluster_file(tmp_path, port, sip)
    nodes = {name: Product(tmp_path / name, free_port(), settings=[
        f"database.url={database}", f"asterisk.sip_port={sip[name]}",
        "demo.test_caller=false", f"cluster.node={name}", "desk.wrap_up_s=0",
    ]) for name in NODES}
    for node in nodes.values():
        node.run_command = node.argv("--config", str(settings), "run")
    a, b = nodes["node-a"], nodes["node-b"]
    folder = tmp_path / "edge"
    folder.mkdir()
    edge = Edge(EdgeSpec("127.0.0.1", port, tuple(EdgeNode(name, "127.0.0.1", sip[name])
                                                  for name in NODES),
                         carriers=("127.0.0.1",), config_dir=str(folder),
                         run_dir=str(folder / "run"), probe_interval_s=1), folder)
    engine = create_store_engine(database)
    store = Store(engine)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        await upgrade_to_head(engine)
        async with store.transaction() as tx:
            await tx.trunks.create(Trunk(name="edge", host="127.0.0.1", port=port))
            cid = await tx.agents.create(
                login="cid", display_name="Cid", sip_user="desk-cid",
                sip_password="cid-sip-secret", endpoint_kind=EndpointKind.DESKPHONE,
                password_hash=cheap_passwords().hash(PASSWORD))
        for node in (a, b):
            await stack.enter_async_context(stopped_after(node))
            await node.start()
        stack.push(lambda failed, *_: _tell_why(failed, nodes))
        await edge.start()
        stack.push_async_callback(edge.stop)
        world = await stack.enter_async_context(carrier_world(installation, state_dir, port))
        # Cid's phone is registered to node B only: node A cannot ring it itself.
        phone = await stack.enter_async_context(SipPhone(
            "desk-cid", "cid-sip-secret", ("127.0.0.1", sip["node-b"])))
        phone.answer = "answer"
        desk = Browser(b.url)
        stack.push_async_callback(desk.close)
        assert (await desk.login("cid")).status == 303
        assert (await desk.post_json("/api/duty", {"on_duty": True})).status == 200
        await until(lambda: _dispatching(edge, set(NODES)), 15,
                    why="the nodes never answered the edge's OPTIONS")

        # The ringing path: Cid's phone is called through node B.
        call, card, accepted_at = await _accepted_on_node_b(world, store, desk)
        dialog = await phone.wait_call(20)
        await until(lambda: _handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                    why="Cid never talked to the caller")
        # Both ways, through both nodes: the caller hears Cid's phone, and Cid the caller.
        await until(lambda: _heard(world, call.caller_number, "agent", accepted_at), 10,
                    why="the caller never heard Cid")
        await phone.wait_hears(dialog, "caller", timeout=10)
        async with store.transaction() as tx:
            assert (await tx.calls.get(call.id)).state is CallState.WITH_AGENT
            # The caller's leg on node A has the node leg to node B as the agent's leg.
            agent_leg = (await tx.calls.get(call.id)).agent_channel_id
        assert agent_leg and agent_leg.startswith(call.caller_channel_id or "?")

        # Cid gives the caller back to the AI from node B's desk: node A carries it out,
        # the node leg goes and Cid's phone is hung up.
        returned = await desk.post_json(f"/api/calls/{call.id}/return-to-ai", {})
        assert returned.status == 200, await returned.text()
        await until(lambda: _handoff_is(store, card, HandoffState.RETURNED_TO_AI), 15,
                    step=0.2, why="the caller never went back to the AI")
        async with asyncio.timeout(10):
            await dialog.ended.wait()  # Cid's phone hung up by node B
        assert dialog.ended_by == "pbx"
        [row] = await rows(store, [call.id])
        assert row.state is CallState.WITH_AI

        # The caller hangs up: node A records the call once, and its recording (on node
        # A, of the call's one bridge) holds the caller and Cid.
        await world.hang_up(call.caller_number)
        await until(lambda: _ended(store, [call.id]), 15, why="the call never ended")
        [row] = await rows(store, [call.id])
        assert row.outcome is CallOutcome.COMPLETED_BY_AI
        assert row.recording_path and row.recording_path.startswith(str(a.data))
        heard = recorded_parties(Path(row.recording_path))
        assert heard["caller"] > 10 and heard["agent"] > 10, heard

        # The open line: the admin gives Cid's desk phone one; on duty again, node B
        # calls it and it answers by itself. Accept moves that line into the node leg's
        # bridge on node B: no new INVITE at the phone.
        async with store.transaction() as tx:
            await tx.agents.set_open_line(cid.id, True, actor="admin")
        phone.auto_answer, phone.answer = True, "ring"
        for on_duty in (False, True):
            assert (await desk.post_json("/api/duty", {"on_duty": on_duty})).status == 200
        line = await phone.wait_call(10)
        invites = phone.invites
        call, card, accepted_at = await _accepted_on_node_b(world, store, desk)
        await until(lambda: _handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                    why="Cid's line never took the caller")
        await until(lambda: _heard(world, call.caller_number, "agent", accepted_at), 10,
                    why="the caller never heard Cid's line")
        await phone.wait_hears(line, "caller", after=accepted_at, timeout=10)
        assert phone.invites == invites
        # Cid puts the handset down: node B's BYE on the node leg says normal clearing,
        # so node A ends the call as Cid's (not offered again); node B calls his line again.
        await phone.hang_up(line)
        await until(lambda: _ended(store, [call.id]), 15, why="the call never ended")
        [row] = await rows(store, [call.id])
        assert row.outcome is CallOutcome.COMPLETED_BY_AGENT
        assert await _handoff_is(store, card, HandoffState.COMPLETED)
        line = await phone.wait_call(10)
        assert (await desk.post_json("/api/duty", {"on_duty": False})).status == 200
        async with asyncio.timeout(10):
            await line.ended.wait()  # off duty hangs the line up
        for node in (a, b):
            await until(lambda n=node: _quiet(n), 10,  # type: ignore[misc]
                        why="a channel or bridge was left on a node")


async def _accepted_on_node_b(world: World, store: Store,
                               desk: Browser) -> tuple[Call, int, float]:
    """A caller on node A asks for a person and Cid takes the card on node B's desk: the
    call, its card, and when he clicked. The edge deals calls round robin: of two calls
    in a row one is on node A (the other hangs up)."""
    call = await place_with_ai(world, store)
    if call.node != "node-a":
        await world.hang_up(call.caller_number)
        call = await place_with_ai(world, store)
    assert call.node == "node-a"
    await ask_for_person(world, call)
    card = await until(lambda: offered(store, call.id), 20, step=0.2, why="no card")
    await until(lambda: _cards(desk, {card}), 10, why="node B's desk lacks the card")
    accepted_at = time.monotonic()
    accepted = await desk.post_json(f"/api/handoffs/{card}/accept", {})
    assert accepted.status == 200, await accepted.text()
    return call, card, accepted_at


async def _heard(world: World, caller: str, who: str, after: float) -> bool:
    return world.probes[caller].first(who, after) is not None


async def _ended(store: Store, call_ids: list[str]) -> bool:
    return all(row.state is CallState.ENDED for row in await rows(store, call_ids))


async def _quiet(node: Product) -> bool:
    """The node's Asterisk holds no channel and no bridge."""
    state: dict[str, Any] = node.state()
    auth = (str(state["ari_user"]), str(state["ari_password"]))
    held = []
    for what in ("channels", "bridges"):
        status, found = await ari(str(state["ari_url"]), auth, "GET", f"/{what}")
        assert status == 200, found
        held += [item["id"] for item in found]
    return not held
