"""`switchboard bench cluster`: two nodes behind the SIP edge, one of them killed mid-run.

Real parts throughout, as in tests/integration/test_cluster_nodes.py: a private
PostgreSQL (Debian's), Kamailio (Debian's) dispatching a carrier Asterisk's calls, two
`switchboard run` nodes (each its embedded Asterisk and controller, the built-in
receptionist answering), SIP desk phones for the agents, registered to the edge once:
every node rings them there, so an agent is reachable wherever the call is.

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
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from handoff.agents import EndpointKind
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Call
from handoff.trunks import Trunk
from pbx import runtime
from pbx.ari import AriError
from pbx.edge import Edge
from pbx.kamailio_config import EdgeNode, EdgePhone, EdgeSpec
from pbx.ports import _port_free, free_port
from pbx.trunk_config import SipTrunk
from web.bench.cluster_hosts import HOST_ADDRESS, PREFIX, NodeHost, cluster_hosts, kill_host
from web.bench.dashboard_site import PASSWORD, Browser, cheap_passwords
from web.bench.handoff import summary
from web.bench.postgres_server import private_postgres
from web.bench.product_run import Product, stopped_after
from web.bench.sip_phone import SipPhone
from web.bench.waiting import until
from web.bench.world import World

MAX_CALLS = 10
NODES = ("node-a", "node-b")
AGENTS = ("bea", "cid")
PROBE_S = 1
# Handoffs of each kind (across nodes, on one node) timed before the kill.
CONNECT_ROUNDS = 3

def edge_port(avoid: frozenset[int]) -> int:
    """A port free for both of the edge's transports (UDP and TCP)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM, avoid)
        if _port_free(port, socket.SOCK_STREAM):
            return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


@dataclass(frozen=True)
class Layout:
    """Where the cluster's parts listen. ``host``: the edge, the carrier, PostgreSQL and
    the agents' phones. Each node: on a host of its own (``hosts``, a namespace each:
    web.bench.cluster_hosts), or on 127.0.0.1 with ports of its own."""

    host: str = "127.0.0.1"
    hosts: dict[str, NodeHost] | None = None

    def address(self, node: str) -> str:
        return self.hosts[node].address if self.hosts else "127.0.0.1"

    def sip_ports(self, names: tuple[str, ...], avoid: frozenset[int]) -> dict[str, int]:
        """Each node's SIP port: 5060 on a host of its own, any free one on 127.0.0.1."""
        ports: dict[str, int] = {}
        for name in names:
            ports[name] = 5060 if self.hosts else free_port(
                socket.SOCK_DGRAM, avoid | set(ports.values()))
        return ports

    def node(self, name: str, folder: Path, database: str, sip: dict[str, int], *,
             edge: int, settings: tuple[str, ...] = (),
             dashboards: dict[str, int] | None = None) -> Product:
        """``switchboard run`` for node ``name`` (on its host), on the shared database.
        Its settings file names the edge and every node: the node reaches agents' desk
        phones through the edge they register to, and the other nodes on its trunks to
        them (a cross-node handoff); with ``dashboards``, each node's dashboard port (the
        edge serves them when the settings give it cluster.edge_https_port)."""
        address = self.address(name)
        url = make_url(database)
        if self.hosts:
            url = url.set(host=self.host)  # PostgreSQL, as the node's host reaches it
        # On its own host the node's Asterisk listens on every address there: its SIP
        # on the bridge for the edge, ARI and AMI on its loopback for its controller
        # (the embedded Asterisk's HTTP, ARI's too, binds where SIP does).
        bind = "0.0.0.0" if self.hosts else address
        product = Product(folder / name, dashboards[name] if dashboards else free_port(),
                          host=address, settings=[
            f"database.url={url.render_as_string(hide_password=False)}",
            f"asterisk.sip_port={sip[name]}", f"asterisk.bind_address={bind}",
            f"asterisk.media_address={address}", "demo.test_caller=false",
            f"cluster.node={name}", *settings])
        product.config = self.cluster_file(folder, edge, sip, dashboards or {})
        if self.hosts:
            product.run_prefix = self.hosts[name].argv()
        return product

    def cluster_file(self, folder: Path, edge: int, sip: dict[str, int],
                     dashboards: dict[str, int]) -> Path:
        """The ``[cluster]`` settings every node reads: the edge and each node's SIP
        address (and its dashboard's port, when given)."""
        nodes = "".join(f'\n[[cluster.nodes]]\nname = "{name}"\n'
                        f'sip_host = "{self.address(name)}"\nsip_port = {port}\n'
                        + (f"dashboard_port = {dashboards[name]}\n" if name in dashboards
                           else "")
                        for name, port in sip.items())
        path = folder / "cluster.toml"
        path.write_text(f'[cluster]\nedge_address = "{self.host}"\nedge_port = {edge}\n'
                        f'carriers = ["{self.host}"]\n{nodes}')
        return path

    def on_host(self, name: str, *command: str) -> list[str]:
        """``command`` run on node ``name``'s host."""
        return self.hosts[name].argv(*command) if self.hosts else list(command)

    async def kill(self, name: str, node: Product) -> None:
        """Node ``name``'s host gone: its Asterisk and its controller killed (SIGKILL),
        on a host of its own every process there and its link down; nothing of it is
        left for a later stop."""
        if self.hosts:
            kill_host(self.hosts[name])
        else:
            pbx_pid = node.state()["asterisk_pid"]
            assert isinstance(pbx_pid, int)
            os.killpg(pbx_pid, signal.SIGKILL)
        await node.signal(signal.SIGKILL)
        (node.data / "run" / "switchboard.json").unlink()


@contextlib.asynccontextmanager
async def carrier_world(installation: runtime.Installation, state_dir: Path,
                        edge: int, host: str = "127.0.0.1") -> AsyncIterator[World]:
    """A carrier Asterisk on ``host`` whose one trunk is the edge there, and the callers
    it places."""
    carrier = runtime.new_instance(
        installation, f"n{os.getpid()}-carrier", state_dir, max_calls=MAX_CALLS,
        ports=runtime.allocate_ports(runtime.PortRequest(), max_calls=MAX_CALLS),
        app="carrier", bind_address=host, media_address=host,
        trunks=(SipTrunk("switchboard", host, edge),))
    await carrier.start()
    world = World(carrier.ari_url, carrier.ari_auth)
    try:
        await world.start()
        yield world
    finally:
        await world.close()
        await carrier.stop()


async def calls_of(store: Store, callers: list[str]) -> dict[str, Call]:
    """The ledger's row of each of these callers' open calls."""
    async with store.transaction() as tx:
        rows = await tx.calls.open_calls()
    return {row.caller_number: row for row in rows if row.caller_number in callers}


async def rows(store: Store, call_ids: list[str]) -> list[Call]:
    async with store.transaction() as tx:
        return [await tx.calls.get(call_id) for call_id in call_ids]


async def place_with_ai(world: World, store: Store, within: float = 20) -> Call:
    """A call through the edge, answered by a node's receptionist: its ledger row."""
    caller = await world.place_call("2000")

    async def with_ai() -> Call | None:
        row = (await calls_of(store, [caller])).get(caller)
        return row if row is not None and row.state is CallState.WITH_AI else None

    return await until(with_ai, within, step=0.1,
                       why=f"the call from {caller} never reached a node's AI")


async def heard(world: World, caller: str, since: float, who: str | None = None) -> bool:
    """Whether ``caller`` heard ``who``'s tone (a second of it) since ``since``; with no
    ``who``, any voice (the receptionist's prompts carry no tone of the probes)."""
    frames = await world.frames(caller, since, time.monotonic())
    if who is None:
        return sum(1 for _, label in frames if label != "-") > 25
    return sum(1 for _, label in frames if label == who) > 50


async def ask_for_person(world: World, call: Call) -> None:
    """The caller presses 0 once the receptionist speaks (it listens from then on)."""
    await until(lambda: heard(world, call.caller_number, 0), 20, step=0.2,
                why=f"{call.caller_number} never heard the receptionist")
    await world.press(call.caller_number, "0")


async def offered(store: Store, call_id: str) -> int | None:
    async with store.transaction() as tx:
        handoffs = await tx.handoffs.for_call(call_id)
    return next((h.id for h in handoffs if h.state is HandoffState.OFFERED), None)


async def handoff_is(store: Store, handoff_id: int, state: HandoffState) -> bool:
    async with store.transaction() as tx:
        return (await tx.handoffs.get(handoff_id)).state is state


async def all_lost(store: Store, call_ids: list[str]) -> bool:
    return all(row.outcome is CallOutcome.PBX_LOST for row in await rows(store, call_ids))


async def all_ended(store: Store, call_ids: list[str]) -> bool:
    return all(row.state is CallState.ENDED for row in await rows(store, call_ids))


async def hung_up(world: World, caller: str) -> bool:
    """Whether the carrier's leg of ``caller``'s call is gone (the node hung it up)."""
    try:
        await world.ari.channels.get(world._outbound[caller])
    except AriError as exc:
        return exc.status == 404
    return False


async def connect(world: World, store: Store, call: Call,
                  desk: Browser) -> tuple[int, float]:
    """The caller asks for a person and the agent at ``desk`` takes the card: the
    handoff, once the agent talks to the caller, and when the agent accepted."""
    await ask_for_person(world, call)
    card = await until(lambda: offered(store, call.id), 20, step=0.1,
                       why=f"no card for {call.id}")
    accepted_at = time.monotonic()
    accepted = await desk.post_json(f"/api/handoffs/{card}/accept", {})
    if accepted.status != 200:
        raise RuntimeError(f"accept of card {card}: {accepted.status}")
    await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                why=f"handoff {card} never connected")
    return card, accepted_at


@contextlib.contextmanager
def edge_folder() -> Iterator[Path]:
    """A folder for the edge's files that Kamailio's account reaches once it dropped root:
    it loads the browsers' certificate only then, and pytest's and tempfile's folders
    are root's alone. Removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="switchboard-edge-") as folder:
        os.chmod(folder, 0o711)  # entered, not listed: its files are 0640
        yield Path(folder)


def edge_for(layout: Layout, folder: Path, port: int, sip: dict[str, int], *,
             phones: tuple[EdgePhone, ...] = (), lease_s: int = 10,
             block_after: int = 20, wss_port: int = 0,
             tls: tuple[str, str] = ("", "")) -> Edge:
    """Kamailio on the layout's host, dispatching to the nodes, probing every second,
    the registrar of the agents' phones (``phones``): with ``wss_port`` browsers' too,
    over secure WebSocket with the ``tls`` certificate and key (then ``folder`` must be
    one Kamailio's account reaches: edge_folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    nodes = tuple(EdgeNode(name, layout.address(name), sip[name]) for name in sip)
    return Edge(EdgeSpec(layout.host, port, nodes, carriers=(layout.host,),
                         config_dir=str(folder), run_dir=str(folder / "run"),
                         probe_interval_s=PROBE_S, phones=phones, block_after=block_after,
                         lease_s=lease_s, wss_port=wss_port, tls_cert=tls[0],
                         tls_key=tls[1]), folder)


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
