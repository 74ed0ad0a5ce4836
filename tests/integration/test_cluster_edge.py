"""The cluster's SIP edge on real parts: Kamailio (Debian's) in front of two Asterisk
nodes, a carrier Asterisk calling through it.

Everything is on 127.0.0.1, each Asterisk on its own ports, not in network namespaces:
ARI and AMI bind 127.0.0.1 by design, so a node's Asterisk in a namespace of its own
would be out of reach of its controller (and of this test) in the root namespace unless
the controller moved in with it. What the edge decides on (which node answers OPTIONS,
which INVITE times out) does not depend on the nodes' addresses: a node is frozen with
SIGSTOP, the black hole a hung host or a firewall's DROP makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import signal
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from handoff.settings import ClusterNodeSettings, ClusterSettings, Settings, load
from pbx import runtime
from pbx.asterisk_config import InboundRoute, Ports, SipAgent
from pbx.edge import Edge, registered_phones, sip_options
from pbx.kamailio_config import EdgeNode, EdgePhone, EdgeSpec
from pbx.ports import free_port
from pbx.runtime import AsteriskInstance
from pbx.trunk_config import SipTrunk
from tests.certificates import private_ca
from tests.faults import paused
from tests.integration.asterisk_helpers import (
    BrowserPhone,
    EventListener,
    ari,
    assert_quiet,
    of_type,
    process_ids,
)
from tests.sip_phone import Dialog, SipError, SipMessage, SipPhone
from tests.systemd_unit import as_systemd_starts_it, processes_reading, unit_settings
from tests.waiting import until
from web import systemd
from web.bench.cluster_rig import edge_folder, edge_port
from web.doctor import Report, examine_cluster

# Calls at once on each Asterisk here: a few, so each takes a small RTP range.
MAX_CALLS = 10
# Bea's desk phone's SIP account, at the edge and on every node.
BEA = ("desk-bea", "bea-sip-secret")


@dataclass
class Cluster:
    edge: Edge
    carrier: AsteriskInstance
    nodes: dict[str, AsteriskInstance]
    # The CA of the edge's WebSocket certificate: what agents' browsers trust.
    ca: Path


# A browser agent, registered to the edge over its WebSocket.
BROWSER = SipAgent("web-dee", "dee-sip-secret", "webrtc", "Dee")


@pytest_asyncio.fixture(scope="module")
async def cluster(installation: runtime.Installation, state_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    tag = f"c{os.getpid()}"
    taken: set[int] = set()

    def ports() -> Ports:
        got = runtime.allocate_ports(runtime.PortRequest(), avoid=frozenset(taken),
                                     max_calls=MAX_CALLS)
        taken.update({got.http, got.sip, got.ami, *range(got.rtp_start, got.rtp_end + 1)})
        return got

    port = edge_port(frozenset(taken))
    wss_port = free_port(avoid=frozenset(taken | {port}))
    taken |= {port, wss_port}
    # Each node knows the edge as its one trunk (by address and port, as any carrier),
    # so calls the edge relays are taken like a carrier's; Bea's desk phone and Dee's
    # browser register to the edge, and each node reaches them there.
    nodes = {
        name: runtime.new_instance(
            installation, f"{tag}-{name}", state_dir, ports=ports(), max_calls=MAX_CALLS,
            trunks=(SipTrunk("edge", "127.0.0.1", port),),
            routes=(InboundRoute("2000", "receptionist"),),
            agents=(SipAgent(*BEA, "deskphone", "Bea"), BROWSER),
            agents_edge=f"127.0.0.1:{port}", browsers_at_edge=True)
        for name in ("node-a", "node-b")
    }
    carrier = runtime.new_instance(
        installation, f"{tag}-carrier", state_dir, ports=ports(), max_calls=MAX_CALLS,
        app="carrier", trunks=(SipTrunk("switchboard", "127.0.0.1", port),))
    certificates = private_ca(tmp_path_factory.mktemp("ca"), "127.0.0.1")
    async with contextlib.AsyncExitStack() as stack:
        folder = stack.enter_context(edge_folder())
        spec = EdgeSpec("127.0.0.1", port, tuple(
            EdgeNode(name, "127.0.0.1", node.spec.ports.sip) for name, node in nodes.items()),
            carriers=("127.0.0.1",), config_dir=str(folder), run_dir=str(folder / "run"),
            probe_interval_s=1,
            phones=(EdgePhone(*BEA), EdgePhone(BROWSER.name, BROWSER.password)),
            wss_port=wss_port, tls_cert=str(certificates.cert),
            tls_key=str(certificates.key))
        edge = Edge(spec, folder)
        for instance in (*nodes.values(), carrier):
            await instance.start()
            stack.push_async_callback(instance.stop)
        await edge.start()
        stack.push_async_callback(edge.stop)
        yield Cluster(edge, carrier, nodes, certificates.ca)


async def examine(cluster: Cluster) -> Report:
    """`switchboard doctor`'s cluster part, with the settings this cluster was made from."""
    spec = cluster.edge.spec
    settings = Settings(cluster=ClusterSettings(
        edge_address=spec.listen_address, edge_port=spec.port,
        edge_config_dir=spec.config_dir, edge_run_dir=spec.run_dir, carriers=spec.carriers,
        nodes=tuple(ClusterNodeSettings(n.name, n.host, n.port) for n in spec.nodes)))
    report = Report()
    await examine_cluster(settings, report)
    return report


async def invite_from(source: str, edge: EdgeSpec) -> int:
    """An INVITE to 2000 sent to the edge from ``source`` (a loopback address of no
    carrier); the status of the edge's final answer."""
    loop = asyncio.get_running_loop()
    final: asyncio.Future[int] = loop.create_future()

    class Phone(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            status = int(data.split(b" ", 2)[1])
            if status >= 200 and not final.done():
                final.set_result(status)

    transport, _ = await loop.create_datagram_endpoint(
        Phone, local_addr=(source, 0), remote_addr=(edge.listen_address, edge.port))
    try:
        port = transport.get_extra_info("sockname")[1]
        transport.sendto("\r\n".join((
            f"INVITE sip:2000@{edge.listen_address}:{edge.port} SIP/2.0",
            f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70", f"From: <sip:scanner@{source}>;tag=1",
            f"To: <sip:2000@{edge.listen_address}>", f"Call-ID: {secrets.token_hex(8)}",
            "CSeq: 1 INVITE", f"Contact: <sip:scanner@{source}:{port}>",
            "Content-Length: 0", "", "")).encode())
        return await asyncio.wait_for(final, 5)
    finally:
        transport.close()


async def active_nodes(edge: Edge) -> set[str]:
    return {node.name for node in await edge.nodes() if node.active}


class Calls:
    """The carrier's calls through the edge, and which node each reached."""

    def __init__(self, cluster: Cluster, listeners: dict[str, EventListener],
                 carrier: EventListener) -> None:
        self.cluster, self.listeners, self.carrier = cluster, listeners, carrier
        self.placed = 0

    async def place(self, within: float = 10) -> str:
        """One call to 2000, answered by the node it reached and hung up there (its BYE
        back through the edge); returns the node's name."""
        self.placed += 1
        caller = f"+1555{os.getpid() % 1000:03d}{self.placed:04d}"
        status, leg = await ari(self.cluster.carrier, "POST", "/channels",
                                endpoint="PJSIP/2000@switchboard", app="carrier",
                                callerId=f"Test <{caller}>")
        assert status == 200, leg

        def reached() -> tuple[str, dict[str, Any]] | None:
            for name, listener in self.listeners.items():
                for event in listener.events:
                    if of_type("StasisStart", channel__caller__number=caller)(event):
                        return name, event
            return None

        name, start = await until(reached, within, why=f"the call from {caller} reached "
                                  "no node")
        node = self.cluster.nodes[name]
        channel = start["channel"]["id"]
        assert (await ari(node, "POST", f"/channels/{channel}/answer"))[0] == 204
        # The carrier's leg enters its app once the node's 200 came back through the edge.
        await self.carrier.wait_for(of_type("StasisStart", channel__id=leg["id"]))
        assert (await ari(node, "DELETE", f"/channels/{channel}"))[0] == 204
        await self.carrier.wait_for(of_type("StasisEnd", channel__id=leg["id"]))
        return name


async def test_calls_spread_over_the_nodes_and_skip_a_silent_node_until_it_answers(
    cluster: Cluster,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        listeners = {name: await stack.enter_async_context(EventListener(node, "switchboard"))
                     for name, node in cluster.nodes.items()}
        carrier = await stack.enter_async_context(EventListener(cluster.carrier, "carrier"))
        calls = Calls(cluster, listeners, carrier)
        await until(lambda: dispatching(cluster.edge, {"node-a", "node-b"}), 10,
                    why="both nodes never answered the edge's OPTIONS")

        # Round robin: four calls, two on each node.
        spread = [await calls.place() for _ in range(4)]
        assert sorted(spread) == ["node-a", "node-a", "node-b", "node-b"], spread
        doctor = await examine(cluster)
        assert doctor.cluster["edge"]["state"] == "running"
        assert doctor.cluster["edge"]["version"].startswith("kamailio 5.")
        assert [(n["name"], n["reachable"], n["in_dispatch"])
                for n in doctor.cluster["nodes"]] == [("node-a", True, True),
                                                      ("node-b", True, True)]
        assert doctor.problems == []
        if os.geteuid() == 0:  # started by root, the edge runs as its own account
            assert cluster.edge.process is not None
            uid = pwd.getpwnam("kamailio").pw_uid
            assert process_ids(cluster.edge.process.pid)["Uid"] == [uid] * 4
        # Someone who is not a carrier is refused at the edge itself (its log says so).
        assert await invite_from("127.0.0.2", cluster.edge.spec) == 403
        log_file = cluster.edge.log_file
        assert log_file is not None
        await until(lambda: "refused a call from 127.0.0.2: not a carrier"
                    in log_file.read_text(), 5, why="the edge did not say why")

        # A node that stops answering (frozen): the edge's OPTIONS probe notices and new
        # calls go to the other node only; thawed, it answers a probe and is back.
        frozen, other = _next_and_other(spread)
        async with paused(cluster.nodes[frozen]) as frozen_at:
            await until(lambda: dispatching(cluster.edge, {other}), 10,
                        why=f"the edge kept dispatching to frozen {frozen}")
            print(f"\nthe edge's probes took a silent node out of the dispatch "
                  f"{time.monotonic() - frozen_at:.2f} s after it froze")
            assert [await calls.place(within=3) for _ in range(3)] == [other] * 3
            doctor = await examine(cluster)
            silent = next(n for n in doctor.cluster["nodes"] if n["name"] == frozen)
            assert (silent["reachable"], silent["in_dispatch"]) == (False, False)
            assert any(frozen in problem for problem in doctor.problems)
        thawed_at = time.monotonic()
        await until(lambda: dispatching(cluster.edge, {"node-a", "node-b"}), 10,
                    why=f"thawed {frozen} never came back into the dispatch")
        print(f"and took it back {time.monotonic() - thawed_at:.2f} s after it thawed")
        spread = [await calls.place() for _ in range(2)]
        assert sorted(spread) == ["node-a", "node-b"], spread

        # A call sent to a node that froze before any probe noticed is not lost: its
        # INVITE, never answered, goes on to the other node, and the node is taken out.
        frozen, other = _next_and_other(spread)
        async with paused(cluster.nodes[frozen]) as frozen_at:
            assert await calls.place(within=15) == other
            print(f"a call sent to a node frozen a moment before reached the other "
                  f"{time.monotonic() - frozen_at:.2f} s after the freeze")
            assert await active_nodes(cluster.edge) == {other}
        await until(lambda: dispatching(cluster.edge, {"node-a", "node-b"}), 10,
                    why=f"thawed {frozen} never came back into the dispatch")
        # The edge gave up on the INVITE the frozen node held; if the node still took
        # it when it woke, that leg is ended here (nothing is left behind).
        await _hang_up_all(cluster.nodes[frozen])

    for instance in (*cluster.nodes.values(), cluster.carrier):
        await assert_quiet(instance)


async def test_a_browser_registers_over_the_edges_websocket_and_every_node_calls_it_there(
    cluster: Cluster,
) -> None:
    spec = cluster.edge.spec
    trusted = ssl.create_default_context(cafile=str(cluster.ca))
    url = f"wss://127.0.0.1:{spec.wss_port}/"
    async with aiohttp.ClientSession() as session:
        # Only over TLS: a WebSocket on the SIP port's TCP listener is refused.
        with pytest.raises(aiohttp.WSServerHandshakeError) as plain:
            await session.ws_connect(f"ws://127.0.0.1:{spec.port}/", protocols=("sip",))
        assert plain.value.status == 403
        # The same accounts and realm as the desk phones: a wrong password is refused.
        with pytest.raises(SipError):
            await BrowserPhone.register(session, url, BROWSER.name, "not-dees-secret",
                                        ssl=trusted)
        tab = await BrowserPhone.register(session, url, BROWSER.name, BROWSER.password,
                                          ssl=trusted)
        try:
            # Each node reads the browser registered at its next qualify, answered by the
            # edge from the browser's binding.
            await until(lambda: _on_every_node(cluster, BROWSER.name, "online"), 15,
                        step=0.2, why="a node never saw the browser")
            # Each node calls it at the edge, which sends the INVITE down the browser's
            # WebSocket; the browser's answer (busy) goes back to that node.
            for node in cluster.nodes.values():
                async with EventListener(node, "switchboard") as events:
                    status, leg = await ari(node, "POST", "/channels",
                                            endpoint=f"PJSIP/{BROWSER.name}", app="switchboard")
                    assert status == 200, leg
                    invite = await _next_request(tab, "INVITE")
                    # The edge records its route on both sides: the browser's in-dialog
                    # requests go back through it, over the WebSocket and then UDP.
                    routes = invite.all("record-route")
                    assert any("transport=ws" in r for r in routes), routes
                    assert len(routes) == 2, routes
                    destroyed = await events.wait_for(
                        of_type("ChannelDestroyed", channel__id=leg["id"]))
                    assert destroyed["cause"] == 17, destroyed  # the browser's 486
        finally:
            await tab.close()
        # The tab closed its socket: its binding went with it, so every node reads the
        # browser unregistered at its next qualify, not at the registration's expiry,
        # and `switchboard doctor` no longer lists it.
        await until(lambda: _on_every_node(cluster, BROWSER.name, "offline"), 15, step=0.2,
                    why="a node still saw the closed tab")
        await until(lambda: _not_listed(spec, BROWSER.name), 15, step=0.2,
                    why="the edge still listed the closed tab's binding")
    for instance in cluster.nodes.values():
        await assert_quiet(instance)


async def test_a_desk_phone_on_tcp_registers_at_the_edge_and_each_node_rings_it_there(
    cluster: Cluster,
) -> None:
    spec = cluster.edge.spec
    async with contextlib.AsyncExitStack() as stack:
        listeners = {name: await stack.enter_async_context(EventListener(node, "switchboard"))
                     for name, node in cluster.nodes.items()}
        # One TCP connection, kept, from behind NAT: the phone names a private address
        # and listens on no port, so the edge reaches it down that connection or not at
        # all.
        phone = await stack.enter_async_context(SipPhone(
            *BEA, (spec.listen_address, spec.port), transport="tcp", nat_address="192.0.2.50"))
        assert await registered_phones(spec) == [BEA[0]]
        # Each node's qualify of the agent at the edge (every 5 s) finds her registered.
        await until(lambda: _on_every_node(cluster, BEA[0], "online"), 15,
                    why="a node never saw Bea's phone registered at the edge")

        # Node A rings her; she answers and puts the handset down (her BYE goes up her
        # connection, and the edge takes it to node A).
        node_a, node_b = cluster.nodes["node-a"], cluster.nodes["node-b"]
        call, channel = await _ring(node_a, listeners["node-a"], phone)
        await phone.hang_up(call)
        await listeners["node-a"].wait_for(of_type("StasisEnd", channel__id=channel))
        # Node B rings her; B hangs up (its BYE reaches her down the same connection).
        call, channel = await _ring(node_b, listeners["node-b"], phone)
        assert (await ari(node_b, "DELETE", f"/channels/{channel}"))[0] == 204
        await asyncio.wait_for(call.ended.wait(), 10)
        assert call.ended_by == "pbx"
        assert phone.invites == 2 and phone.connected.is_set()

    # Put away, the phone unregistered over its connection.
    assert await registered_phones(spec) == []
    for instance in cluster.nodes.values():
        await assert_quiet(instance)


async def _not_listed(spec: EdgeSpec, user: str) -> bool:
    return user not in await registered_phones(spec)


async def _next_request(phone: BrowserPhone, method: str) -> SipMessage:
    """The next ``method`` request the browser is sent (an OPTIONS may come first)."""
    async with asyncio.timeout(10):
        while True:
            request = await phone.requests.get()
            if request.start.startswith(f"{method} "):
                return request


async def _ring(node: AsteriskInstance, listener: EventListener,
                phone: SipPhone) -> tuple[Dialog, str]:
    """A call from ``node`` to Bea's desk phone, answered there: the phone's side of it
    and the node's channel."""
    status, channel = await ari(node, "POST", "/channels", endpoint=f"PJSIP/{BEA[0]}",
                                app="switchboard")
    assert status == 200, channel
    dialog = await phone.wait_call()
    await listener.wait_for(of_type("StasisStart", channel__id=channel["id"]))
    return dialog, channel["id"]


async def _on_every_node(cluster: Cluster, endpoint: str, state: str) -> bool:
    """Whether every node reads the agent's endpoint in ``state`` (online, offline)."""
    for node in cluster.nodes.values():
        status, found = await ari(node, "GET", f"/endpoints/PJSIP/{endpoint}")
        if status != 200 or found["state"] != state:
            return False
    return True


async def dispatching(edge: Edge, nodes: set[str]) -> bool:
    """Whether the edge sends new calls to these nodes and no others."""
    return await active_nodes(edge) == nodes


def _next_and_other(spread: list[str]) -> tuple[str, str]:
    """After an even number of calls alternating over two nodes, the node round robin
    picks next (the one the first of them went to), and the other."""
    nxt = spread[0]
    return nxt, "node-b" if nxt == "node-a" else "node-a"


async def _hang_up_all(node: AsteriskInstance) -> None:
    _, channels = await ari(node, "GET", "/channels")
    for channel in channels:
        await ari(node, "DELETE", f"/channels/{channel['id']}")


async def test_switchboard_edge_run_serves_the_edge_as_its_unit_runs_it_until_sigterm(
    tmp_path: Path,
) -> None:
    port = edge_port(frozenset())
    config = tmp_path / "switchboard.toml"
    config.write_text("\n".join((
        f'data_dir = "{tmp_path / "data"}"', "[cluster]", 'edge_address = "127.0.0.1"',
        f"edge_port = {port}", f'edge_config_dir = "{tmp_path / "etc"}"',
        f'edge_run_dir = "{tmp_path / "run"}"', 'carriers = ["127.0.0.1"]',
        # A node nobody runs: the edge probes it and sends it nothing.
        "[[cluster.nodes]]", 'name = "node-a"', 'sip_host = "127.0.0.1"',
        f"sip_port = {edge_port(frozenset({port}))}", "")))
    unit = systemd.build_edge_unit(load(config), config, [], "root")
    [unit_file] = systemd.write_units(unit, tmp_path / "units")
    argv, env, cwd = as_systemd_starts_it(unit_settings(unit_file))
    out = tmp_path / "edge.log"
    rendered = str(tmp_path / "etc" / "kamailio.cfg")
    commands: list[asyncio.subprocess.Process] = []

    async def start() -> asyncio.subprocess.Process:
        """The unit's command, started as systemd starts it; once the edge serves."""
        with out.open("ab") as log:
            command = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=log)
        commands.append(command)
        # Up when it answers a carrier's keep-alive on the edge's port.
        answer = await until(lambda: sip_options("127.0.0.1", port), 60,
                             why=lambda: f"the edge never answered OPTIONS:\n{out.read_text()}")
        assert answer.status == 200
        # Its banner follows once its control socket answers, maybe after the OPTIONS.
        await until(lambda: out.read_text().count("the SIP edge runs: kamailio")
                    == len(commands), 10,
                    why=lambda: f"the command never said the edge runs:\n{out.read_text()}")
        return command

    try:
        command = await start()
        kamailio = processes_reading("kamailio", rendered)
        assert kamailio, "no Kamailio runs the rendered file"
        uid = pwd.getpwnam("kamailio").pw_uid  # it dropped root after binding its port
        assert all(process_ids(pid)["Uid"] == [uid] * 4 for pid in kamailio)

        # Kamailio's main process dies: the command says so and exits 1, for systemd to
        # start it again, and leaves none of Kamailio's children holding the port.
        [main] = [pid for pid in kamailio if _parent(pid) == command.pid]
        os.kill(main, signal.SIGKILL)
        assert await asyncio.wait_for(command.wait(), 30) == 1, out.read_text()
        assert "the SIP edge (kamailio) exited by itself" in out.read_text()
        await until(lambda: not processes_reading("kamailio", rendered), 5,
                    why="Kamailio's children outlived its main process")

        # Started again; then systemctl stop (KillMode=mixed): SIGTERM to the command
        # alone, which stops Kamailio and exits 0 with nothing of it left.
        command = await start()
        command.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(command.wait(), 30) == 0, out.read_text()
        await until(lambda: not processes_reading("kamailio", rendered), 5,
                    why="a Kamailio process outlived the edge's stop")
        assert await sip_options("127.0.0.1", port, timeout=1) is None
    finally:
        for command in commands:
            if command.returncode is None:
                command.kill()
                await command.wait()
        for pid in processes_reading("kamailio", rendered):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError):
        # /proc/PID/stat: "pid (name) state ppid ...", the name in parentheses.
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    return 0
