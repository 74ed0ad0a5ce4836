"""`switchboard bench cluster`: two nodes behind the SIP edge, one of them killed mid-run.

Real parts throughout, as in tests/integration/test_cluster_nodes.py: a private
PostgreSQL (Debian's), Kamailio (Debian's) dispatching a carrier Asterisk's calls, two
`switchboard run` nodes (each its embedded Asterisk and controller, the built-in
receptionist answering), SIP desk phones for the agents, registered to the edge once:
every node rings them there, so an agent is reachable wherever the call is. The
cluster's parts (where each listens, the nodes, the edge, the carrier) and a call's
steps through them are in web.bench.cluster_rig; this module is the run and its report.

The run: first handoffs across nodes, each measured against one on a single node in the
same run (a caller on node A or node B, the agent taking the card on node B's desk; on A
that is node A calling node B on its node trunk: handoff.live.xnode). Then calls spread
over both nodes, an agent talking to a caller on each; then node A dies whole (its
Asterisk and its controller, SIGKILL). What it reports:

- calls lost on the surviving node (its callers hung up or its calls ended): target 0;
- seconds until a new call reaches a node's AI again (the edge's probe or its 2 s
  wait on the dead node, whichever comes first);
- seconds until the dead node's calls have their outcome (pbx_lost, the lease);
- seconds until the agent who was talking on the dead node is free again, and whether
  a handoff to her then connects on the survivor;
- the cross-node connect cost: from the Accept to the agent's first voice at the
  caller (as `switchboard bench handoff` counts it), across nodes and on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from handoff.agents import EndpointKind
from handoff.calls import CallState
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Call
from handoff.trunks import Trunk
from pbx import runtime
from pbx.edge import Edge
from pbx.kamailio_config import EdgePhone
from web.bench.cluster_hosts import HOST_ADDRESS, PREFIX, cluster_hosts
from web.bench.cluster_rig import (
    NODES,
    PROBE_S,
    Layout,
    all_ended,
    all_lost,
    carrier_world,
    connect,
    edge_for,
    edge_port,
    heard,
    hung_up,
    place_with_ai,
    rows,
)
from web.bench.dashboard_site import PASSWORD, Browser, cheap_passwords
from web.bench.handoff import summary
from web.bench.postgres_server import private_postgres
from web.bench.product_run import Product, stopped_after
from web.bench.sip_phone import SipPhone
from web.bench.waiting import until
from web.bench.world import World

AGENTS = ("bea", "cid")
# Handoffs of each kind (across nodes, on one node) timed before the kill.
CONNECT_ROUNDS = 3


async def measure(folder: Path, calls_per_node: int = 2, lease_s: int = 5) -> dict[str, Any]:
    """The run, each node on a host of its own (a network namespace)."""
    installation = await asyncio.to_thread(runtime.locate)
    with cluster_hosts(NODES) as hosts, private_postgres(
            also_on=HOST_ADDRESS, network=f"{HOST_ADDRESS}/{PREFIX}") as database:
        return await _run(database, installation, folder, calls_per_node, lease_s=lease_s,
                          layout=Layout(HOST_ADDRESS, hosts))


async def _run(database: str, installation: runtime.Installation, folder: Path,
               calls_per_node: int, *, lease_s: int, layout: Layout) -> dict[str, Any]:
    port = edge_port(frozenset())
    sip = layout.sip_ports(NODES, frozenset({port}))
    nodes = {name: layout.node(name, folder, database, sip, edge=port, settings=(
                               f"cluster.lease_s={lease_s}", "desk.wrap_up_s=0"))
             for name in NODES}
    a, b = nodes["node-a"], nodes["node-b"]
    edge = edge_for(layout, folder / "edge", port, sip, phones=tuple(
        EdgePhone(f"desk-{login}", f"{login}-sip-secret") for login in AGENTS),
        lease_s=lease_s)
    engine = create_store_engine(database)
    store = Store(engine)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        await upgrade_to_head(engine)
        async with store.transaction() as tx:
            await tx.trunks.create(Trunk(name="edge", host=layout.host, port=port))
            for login in AGENTS:
                await tx.agents.create(
                    login=login, display_name=login.title(), sip_user=f"desk-{login}",
                    sip_password=f"{login}-sip-secret", endpoint_kind=EndpointKind.DESKPHONE,
                    password_hash=cheap_passwords().hash(PASSWORD))
        for node in (a, b):
            await stack.enter_async_context(stopped_after(node))
            await node.start()
        stack.push(lambda failed, *_: _tell_why(failed, nodes))
        await edge.start()
        stack.push_async_callback(edge.stop)
        world = await stack.enter_async_context(
            carrier_world(installation, folder / "carrier", port, layout.host))
        # Each agent's desk phone registers to the edge, once: every node rings it there.
        for login in AGENTS:
            await stack.enter_async_context(SipPhone(
                f"desk-{login}", f"{login}-sip-secret", (layout.host, port),
                host=layout.host))
        desks: dict[tuple[str, str], Browser] = {}
        for login, node_name in (("bea", "node-a"), ("cid", "node-b"), ("bea", "node-b")):
            desk = Browser(nodes[node_name].url)
            stack.push_async_callback(desk.close)
            if (await desk.login(login)).status != 303:
                raise RuntimeError(f"{login} could not sign in on {node_name}")
            desks[login, node_name] = desk
        # A node learns a phone registered to the edge at its next qualify (5 s): until
        # then it refuses duty, as for a phone that is not registered.
        for login in AGENTS:
            await until(lambda d=desks[login, "node-b"]: _on_duty(d),  # type: ignore[misc]
                        15, step=0.5, why=f"{login} could not go on duty")
        await until(lambda: _dispatching(edge, set(sip)), 15, step=0.2,
                    why="the nodes never answered the edge's OPTIONS")

        cross, same = await _connect_costs(world, store, desks["cid", "node-b"])

        calls = [await place_with_ai(world, store) for _ in range(2 * calls_per_node)]
        on = {name: [c for c in calls if c.node == name] for name in sip}
        # An agent talking on each node: Bea to a caller on A, Cid to one on B.
        await connect(world, store, on["node-a"][0], desks["bea", "node-a"])
        await connect(world, store, on["node-b"][0], desks["cid", "node-b"])

        await layout.kill("node-a", a)
        killed = time.monotonic()
        new_calls, lost_s, bea_free_s = await asyncio.gather(
            _new_calls(world, store, killed), _lost(store, on["node-a"], killed, lease_s),
            _free(store, "bea", killed, lease_s))
        new_call = new_calls[0]
        # Bea, free again, takes a new caller's card on the surviving node.
        confirmed = True
        try:
            await connect(world, store, new_call[1], desks["bea", "node-b"])
        except (AssertionError, RuntimeError):
            confirmed = False
        survivors = [c.id for c in on["node-b"]] + [call.id for _, call in new_calls]
        survivors_lost = 0
        for row in await rows(store, survivors):
            if row.state is CallState.ENDED or await hung_up(world, row.caller_number):
                survivors_lost += 1
        still_heard = await heard(world, on["node-b"][0].caller_number,
                                  time.monotonic() - 2, "agent")
        for row in await rows(store, survivors):
            await world.hang_up(row.caller_number)
        await until(lambda: all_ended(store, survivors), 15, step=0.2,
                    why="the survivor's calls never ended")
        return {
            "nodes": 2,
            "calls_before_kill": {name: len(on[name]) for name in sip},
            "lease_s": lease_s,
            "edge_probe_interval_s": PROBE_S,
            "killed": "node-a's host: every process in its namespace (SIGKILL), its link down",
            "calls_lost_on_surviving_nodes": survivors_lost,
            "survivor_agent_call_still_heard": still_heard,
            "new_calls_succeed_after_s": round(new_call[0], 2),
            "second_new_call_after_s": round(new_calls[1][0], 2),
            "lost_calls_ended_pbx_lost_after_s": round(lost_s, 2),
            "agents_reachable_after_s": round(bea_free_s, 2),
            "agent_reached_on_survivor": confirmed,
            "cross_node_connect_ms": summary(cross),
            "same_node_connect_ms": summary(same),
            "connect_rounds": CONNECT_ROUNDS,
        }
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the stack may swallow)


def _tell_why(failed: type[BaseException] | None, nodes: dict[str, Product]) -> None:
    """A run that failed prints what each node said last (to stderr: --json stays JSON)."""
    if failed is not None:
        for name, node in nodes.items():
            print(f"--- {name}'s last lines:\n{''.join(node.output[-60:])}", file=sys.stderr)


async def _on_duty(desk: Browser) -> bool:
    return (await desk.post_json("/api/duty", {"on_duty": True})).status == 200


async def _dispatching(edge: Edge, names: set[str]) -> bool:
    return {node.name for node in await edge.nodes() if node.active} == names


async def _new_calls(world: World, store: Store, since: float) -> list[tuple[float, Call]]:
    """Two new calls, one after the other, and the seconds from ``since`` until each
    reached a node's AI: round robin sends one of them to the dead node's turn unless the
    edge's probe noticed already (that one waits for the edge's 2 s no-answer timer). A
    call that fails is followed by another."""
    done: list[tuple[float, Call]] = []
    for _ in range(5):
        with contextlib.suppress(AssertionError):
            call = await place_with_ai(world, store, within=15)
            done.append((time.monotonic() - since, call))
        if len(done) == 2:
            return done
    raise TimeoutError("new calls did not reach a node's AI after the kill (5 tried)")


async def _connect_costs(world: World, store: Store,
                         desk: Browser) -> tuple[list[float], list[float]]:
    """Handoffs taken at ``desk`` (node B's): callers the edge sent to node A (across
    nodes) and to node B (on one node), CONNECT_ROUNDS each; each one's milliseconds from
    the Accept to the agent's first voice at the caller."""
    timed: dict[str, list[float]] = {name: [] for name in NODES}
    for _ in range(4 * CONNECT_ROUNDS):
        if all(len(done) >= CONNECT_ROUNDS for done in timed.values()):
            break
        call = await place_with_ai(world, store)
        if call.node in timed and len(timed[call.node]) < CONNECT_ROUNDS:
            timed[call.node].append(await _timed_handoff(world, store, call, desk))
        else:
            await world.hang_up(call.caller_number)
            await until(lambda c=call: all_ended(store, [c.id]), 15,  # type: ignore[misc]
                        why="a caller's call never ended")
    if any(len(done) < CONNECT_ROUNDS for done in timed.values()):
        raise RuntimeError(f"the edge never sent {CONNECT_ROUNDS} calls to each node")
    return timed["node-a"], timed["node-b"]


async def _timed_handoff(world: World, store: Store, call: Call, desk: Browser) -> float:
    """A handoff (``connect``) whose caller then hangs up: the Accept's milliseconds to
    the agent's first voice at the caller."""
    _, accepted_at = await connect(world, store, call, desk)
    heard_at = await until(lambda: world.first_heard(call.caller_number, "agent", accepted_at),
                           10, step=0.05, why=f"the caller of {call.id} never heard the agent")
    await world.hang_up(call.caller_number)
    await until(lambda: all_ended(store, [call.id]), 15, why=f"{call.id} never ended")
    await until(lambda: _not_busy(store, "cid"), 15, why="the agent stayed busy")
    return (heard_at - accepted_at) * 1000


async def _not_busy(store: Store, login: str) -> bool:
    async with store.transaction() as tx:
        agent = await tx.agents.by_login(login)
        assert agent is not None
        return agent.id not in await tx.agents.busy_agent_ids()


async def _lost(store: Store, calls: list[Call], since: float, lease_s: int) -> float:
    await until(lambda: all_lost(store, [c.id for c in calls]), lease_s + 15, step=0.1,
                why="the dead node's calls never had their outcome")
    return time.monotonic() - since


async def _free(store: Store, login: str, since: float, lease_s: int) -> float:
    """Seconds until ``login`` is no longer busy with a call of the dead node."""
    await until(lambda: _not_busy(store, login), lease_s + 15, step=0.1,
                why=f"{login} stayed busy with a dead node's call")
    return time.monotonic() - since


def _print(result: dict[str, Any]) -> None:
    print(f"cluster: 2 nodes, node A killed (lease {result['lease_s']} s, edge probes "
          f"every {result['edge_probe_interval_s']} s)")
    print(f"  calls before the kill: {result['calls_before_kill']}")
    print(f"  calls lost on the surviving node: {result['calls_lost_on_surviving_nodes']} "
          "(target 0)")
    print(f"  new calls succeed again after: {result['new_calls_succeed_after_s']} s "
          f"(the next one after {result['second_new_call_after_s']} s)")
    print(f"  dead node's calls ended (pbx_lost) after: "
          f"{result['lost_calls_ended_pbx_lost_after_s']} s")
    reached = "connected" if result["agent_reached_on_survivor"] else "FAILED"
    print(f"  its agent reachable again after: {result['agents_reachable_after_s']} s "
          f"(a handoff to her on the survivor: {reached})")
    cross, same = result["cross_node_connect_ms"], result["same_node_connect_ms"]
    print(f"  connect, accept to the agent's voice ({result['connect_rounds']} each): "
          f"across nodes p50 {cross['p50']} ms (max {cross['max']}), on one node p50 "
          f"{same['p50']} ms (max {same['max']})")


def main(calls_per_node: int, as_json: bool, lease_s: int) -> int:
    if calls_per_node < 1 or not 3 <= lease_s <= 300:
        print("switchboard bench cluster: --calls is at least 1 and --lease 3 to 300 "
              "(cluster.lease_s)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-cluster-") as folder:
        result = asyncio.run(measure(Path(folder), calls_per_node, lease_s))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    ok = (result["calls_lost_on_surviving_nodes"] == 0 and result["agent_reached_on_survivor"])
    return 0 if ok else 1
