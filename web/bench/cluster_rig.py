"""The cluster's parts, as the cluster benchmark and the cluster tests build them, and a
call's steps through them.

The parts: where each listens (:class:`Layout`: every node on a host of its own, or all
on 127.0.0.1 with ports of their own), a node's `switchboard run` on the shared
database, the SIP edge (Kamailio) dispatching to the nodes, and the carrier Asterisk
whose callers reach the edge. The steps, as the shared ledger and the carrier see them:
a call placed and answered by a node's AI, the caller asking for a person, the card
offered and taken, what the caller hears, the calls' outcomes.

Apart from the benchmark's run and report (web.bench.cluster) because the integration
tests build on the same parts and steps (tests/integration/test_cluster_nodes.py among
them), so a step reads the same in a test as in the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.store import Store
from handoff.store.models import Call
from pbx import runtime
from pbx.ari import AriError
from pbx.edge import Edge
from pbx.kamailio_config import EdgeNode, EdgePhone, EdgeSpec
from pbx.ports import _port_free, free_port
from pbx.trunk_config import SipTrunk
from web.bench.cluster_hosts import NodeHost, kill_host
from web.bench.dashboard_site import Browser
from web.bench.product_run import Product
from web.bench.waiting import until
from web.bench.world import World

MAX_CALLS = 10
NODES = ("node-a", "node-b")
PROBE_S = 1


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
