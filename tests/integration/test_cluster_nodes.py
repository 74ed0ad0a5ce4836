"""A node lost without losing the floor: two `switchboard run` nodes behind the edge on
one PostgreSQL, each its own embedded Asterisk and controller, node names and leases.

Real parts throughout: Kamailio (Debian's) dispatches a carrier Asterisk's calls to the
two nodes, the product's own controllers answer them with the built-in receptionist,
and Bea's and Cid's SIP desk phones register to the edge (its registrar), which each
node rings them through. Each node is a host of its own (a network namespace:
web.bench.cluster_hosts) holding its Asterisk and its `switchboard run`; the edge, the
carrier, the phones and PostgreSQL are on this host's address on the bridge.

First a handoff across nodes: a caller on node A, Cid taking the card on node B's desk,
node A calling node B on its node trunk (handoff.live.xnode); Cid gives the caller back
to the AI from B's desk, and node A's recording holds him. Then the same with Cid's
open line held on node B. Then node A's controller alone is killed (its Asterisk keeps the calls):
A refuses new calls at once and the edge sends them to node B; A's controller, back
within its lease, adopts its calls. Killed again, for longer: node B ends them once A's
lease runs out, and A's controller, back after that, hangs
up what is left of them. Then node A's host dies (every process in its namespace killed
with SIGKILL, its link down): new calls go to node B, which ends A's calls as pbx_lost,
the edge hangs up Bea's open line with dead node A, node B opens her line again, and
she takes node B's next caller through it on the same registration (her phone never
registers again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from handoff.agents import AgentRole, EndpointKind
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.settings import ClusterNodeSettings, ClusterSettings, DatabaseSettings, Settings
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Call
from handoff.trunks import Trunk
from pbx import runtime
from pbx.dashboards_edge import DashboardsEdge, DashboardsSpec, NodeDashboard, nodes_up
from pbx.edge import Edge, registered_phones, take_phones
from pbx.kamailio_config import EdgePhone
from pbx.ports import free_port
from tests.agent_machine import trust_ca
from tests.certificates import Certificates, private_ca
from tests.integration.test_cluster_edge import active_nodes
from tests.integration.test_controller_kill import board
from tests.integration.test_handoff_move import recorded_parties
from tests.product_run import Product, stopped_after
from tests.sip_phone import Dialog, SipError, SipPhone
from tests.waiting import until
from web.bench.browser_handoff import CHROMIUM
from web.bench.cluster_hosts import HOST_ADDRESS, PREFIX, NodeHost, cluster_hosts
from web.bench.cluster_rig import (
    NODES,
    Layout,
    all_ended,
    all_lost,
    ask_for_person,
    carrier_world,
    edge_folder,
    edge_for,
    edge_port,
    handoff_is,
    heard,
    hung_up,
    offered,
    place_with_ai,
    rows,
)
from web.bench.dashboard_site import PASSWORD, Browser, cheap_passwords
from web.bench.postgres_server import private_postgres
from web.bench.softphone_rig import (
    agent_browser,
    agent_tone_wav,
    build_softphone_bundle,
    chromium_args,
    sign_in_with_phone,
)
from web.bench.world import World
from web.doctor import Report, examine_cluster

pytestmark = pytest.mark.integration

# 6 s: under this machine's load a 3 s lease lapsed on a live node (a renewal every 1 s)
LEASE_S = 6
# Node A's lease while its controller is down and back (its calls adopted): the restart
# under a load of 15 took over 60 s once, and node B ended the calls it was to adopt.
ADOPT_LEASE_S = 180
# Failed sign-ins at the edge before the sender is blocked.
GUESSES = 3
# Dee's browser phone's account, and her PC: a host of its own on the nodes' network
# (where Chromium sees none of this machine's links come and go: on a change it drops
# every request in flight, ERR_NETWORK_CHANGED).
DEE = EdgePhone("web-dee", "dee-sip-secret")
AGENT_PC = "agent-pc"


@pytest.fixture
def hosts() -> Iterator[tuple[Layout, str]]:
    """Each node's host (a namespace on a bridge), and PostgreSQL reachable from them."""
    with cluster_hosts((*NODES, AGENT_PC)) as nodes, private_postgres(
            also_on=HOST_ADDRESS, network=f"{HOST_ADDRESS}/{PREFIX}") as database:
        yield Layout(HOST_ADDRESS, nodes), database


@pytest.fixture
def edge_dir() -> Iterator[Path]:
    with edge_folder() as folder:
        yield folder


async def test_a_lost_node_s_calls_end_as_pbx_lost_on_the_survivor_and_new_calls_go_there(
    hosts: tuple[Layout, str], installation: runtime.Installation, state_dir: Path,
    tmp_path: Path, edge_dir: Path,
) -> None:
    layout, database = hosts
    port = edge_port(frozenset())
    sip = layout.sip_ports(NODES, frozenset({port}))
    # Browsers register to the edge over secure WebSocket (its certificate from a private
    # CA, for the edge's address): every node tells them to.
    wss = free_port(avoid=frozenset({port, *sip.values()}))
    certificates = private_ca(tmp_path / "ca", layout.host)
    # Agents open their desks at the edge's HTTPS address too (HAProxy in front of both
    # nodes' dashboards, on the same certificate): that is every node's origin.
    https = free_port(avoid=frozenset({port, wss, *sip.values()}))
    dashboards = {name: free_port() for name in NODES}
    at_the_edge = f"https://{layout.host}:{https}"
    # Node A's first lease outlasts its controller's restart (the calls are adopted);
    # from then on both nodes' leases are short, for the losses.
    nodes = {name: layout.node(name, tmp_path, database, sip, edge=port, settings=(
        f"cluster.lease_s={ADOPT_LEASE_S if name == 'node-a' else LEASE_S}",
        "desk.wrap_up_s=0", f"cluster.edge_wss_port={wss}",
        f"cluster.edge_https_port={https}"), dashboards=dashboards) for name in NODES}
    a, b = nodes["node-a"], nodes["node-b"]
    edge = edge_for(layout, edge_dir, port, sip, phones=tuple(
        EdgePhone(f"desk-{login}", f"{login}-sip-secret") for login in ("bea", "cid")),
        lease_s=LEASE_S, block_after=GUESSES, wss_port=wss,
        tls=(str(certificates.cert), str(certificates.key)))
    engine = create_store_engine(database)
    store = Store(engine)
    desks: list[Browser] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        # The shared store's people and trunk, written once for every node; the nodes
        # start one after the other (the first seeds the demo's receptionist).
        await upgrade_to_head(engine)
        async with store.transaction() as tx:
            await tx.trunks.create(Trunk(name="edge", host=layout.host, port=port))
            for login in ("bea", "cid"):
                await tx.agents.create(
                    login=login, display_name=login.title(), sip_user=f"desk-{login}",
                    sip_password=f"{login}-sip-secret", endpoint_kind=EndpointKind.DESKPHONE,
                    password_hash=cheap_passwords().hash(PASSWORD))
            cid = await tx.agents.by_login("cid")
            assert cid is not None
        async with store.transaction() as tx:  # Dee, on a browser phone
            await tx.agents.create(
                login="dee", display_name="Dee", sip_user=DEE.user, sip_password=DEE.password,
                endpoint_kind=EndpointKind.WEBRTC, password_hash=cheap_passwords().hash(PASSWORD))
        for node in (a, b):
            await stack.enter_async_context(stopped_after(node))
            await node.start()
        stack.push(lambda failed, *_: _tell_why(failed, nodes))
        await edge.start()
        stack.push_async_callback(edge.stop)
        proxy = _dashboards_at_the_edge(layout, https, dashboards, certificates, edge=edge,
                                        folder=tmp_path / "dashboards")
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        world = await stack.enter_async_context(
            carrier_world(installation, state_dir, port, layout.host))
        # Both desk phones register to the edge (digest against their agents' SIP
        # passwords), once for the whole test.
        at_edge = (layout.host, port)
        bea_phone = await stack.enter_async_context(SipPhone(
            "desk-bea", "bea-sip-secret", at_edge, host=layout.host))
        cid_phone = await stack.enter_async_context(SipPhone(
            "desk-cid", "cid-sip-secret", at_edge, host=layout.host))
        bea_phone.answer = cid_phone.answer = "answer"
        # A person added meanwhile: refused until the running edge is given the accounts
        # again (`switchboard config edge`), which keeps every registration it has.
        dan = ("desk-dan", "dan-sip-secret", at_edge)
        with pytest.raises(SipError):
            async with SipPhone(*dan, host=layout.host):
                pass
        assert await take_phones(replace(edge.spec, phones=(
            *edge.spec.phones, EdgePhone("desk-dan", "dan-sip-secret")))) == (3, 0)
        async with SipPhone(*dan, host=layout.host) as dan_phone:
            assert dan_phone.registered
        # Someone guessing Bea's password from another address is refused, then blocked:
        # even her right password is refused from there, not from her phone's address.
        for guess in range(GUESSES):
            with pytest.raises(SipError) as wrong:
                async with SipPhone("desk-bea", f"guess-{guess}-xyz", at_edge,
                                    host="127.0.0.9"):
                    pass
            assert wrong.value.status == (401 if guess < GUESSES - 1 else 403)
        with pytest.raises(SipError) as blocked:
            async with SipPhone("desk-bea", "bea-sip-secret", at_edge, host="127.0.0.9"):
                pass
        assert blocked.value.status == 403
        for login, node in (("bea", a), ("cid", b)):
            desk = Browser(node.url, served_at=at_the_edge)
            desks.append(desk)
            stack.push_async_callback(desk.close)
            assert (await desk.login(login)).status == 303
            # Each node learns a phone registered to the edge at its next qualify (5 s):
            # until then it refuses duty, as for a phone that is not registered.
            await until(lambda d=desk: _on_duty(d), 15, step=0.5,  # type: ignore[misc]
                        why=f"{login} could not go on duty")
        bea_desk_a, cid_desk = desks
        await until(lambda: _dispatching(edge, {"node-a", "node-b"}), 15,
                    why="the nodes never answered the edge's OPTIONS")

        # Across nodes: a caller on node A, Cid taking the card on node B's desk. Node B
        # rings his phone (through the edge) and node A calls node B on its node trunk
        # for him; both directions are heard, through both nodes. Meanwhile the nodes'
        # qualifies of his phone go unanswered, as a loaded edge's late answers: both
        # read it offline, yet it is registered at the edge, which rings it.
        qualifies = contextlib.ExitStack()
        stack.callback(qualifies.close)

        async def qualifies_lost() -> None:
            qualifies.enter_context(_options_dropped("desk-cid", port))
            await until(lambda: _phone_reads(layout, nodes, "desk-cid", "offline"), 20,
                        step=0.2, why="the nodes still read Cid's phone online")

        call, card, accepted_at = await _accepted_on_node_b(world, store, cid_desk,
                                                            qualifies_lost)
        dialog = await cid_phone.wait_call(20)
        await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                    why="Cid never talked to node A's caller")
        # Their qualifies answered again: online at the next (5 s), well before a phone
        # watch could set him away (two checks 10 s apart, while he is free).
        qualifies.close()
        # A second of Cid at the caller (through node A's bridge, which is recorded).
        await until(lambda: heard(world, call.caller_number, accepted_at, "agent"), 10,
                    step=0.2, why=lambda: "the caller never heard Cid: "
                    + _what_heard(world, call.caller_number, accepted_at))
        await cid_phone.wait_hears(dialog, "caller", timeout=10)
        [row] = await rows(store, [call.id])
        # On node A the agent's leg is the node leg to node B (named after the caller's).
        assert row.state is CallState.WITH_AGENT
        assert row.agent_channel_id and row.agent_channel_id.startswith(
            row.caller_channel_id or "?")
        # Cid gives the caller back to the AI from node B's desk: node A carries it out,
        # the node leg goes and Cid's phone is hung up.
        returned = await cid_desk.post_json(f"/api/calls/{call.id}/return-to-ai", {})
        assert returned.status == 200, await returned.text()
        await until(lambda: handoff_is(store, card, HandoffState.RETURNED_TO_AI), 15,
                    step=0.2, why="the caller never went back to the AI")
        async with asyncio.timeout(10):
            await dialog.ended.wait()
        assert dialog.ended_by == "pbx"
        [row] = await rows(store, [call.id])
        assert row.state is CallState.WITH_AI
        # The caller hangs up: node A records the call once, its recording (of the
        # call's one bridge, on node A) holding the caller and Cid.
        await world.hang_up(call.caller_number)
        await until(lambda: all_ended(store, [call.id]), 15, why="the call never ended")
        [row] = await rows(store, [call.id])
        assert row.outcome is CallOutcome.COMPLETED_BY_AI
        assert row.recording_path and row.recording_path.startswith(str(a.data))
        parties = recorded_parties(Path(row.recording_path))
        assert parties["caller"] > 10 and parties["agent"] > 10, parties
        await _commands_from_node_b_on_node_a_s_call(
            world, store, layout, nodes, cid_desk=cid_desk, bea_desk_a=bea_desk_a,
            cid_phone=cid_phone, bea_phone=bea_phone)

        # Cid's desk phone with an open line, held on node B: Accept moves that line into
        # the node leg's bridge there, no new INVITE at his phone.
        async with store.transaction() as tx:
            await tx.agents.set_open_line(cid.id, True, actor="admin")
        cid_phone.auto_answer, cid_phone.answer = True, "ring"
        # (Duty is refused while his node reads the phone offline.)
        await until(lambda: _phone_reads(layout, nodes, "desk-cid", "online"), 20,
                    step=0.2, why="the nodes never read Cid's phone online again")
        for on_duty in (False, True):
            assert (await cid_desk.post_json("/api/duty", {"on_duty": on_duty})).status == 200
        line = await cid_phone.wait_call(10)
        invites = cid_phone.invites
        call, card, accepted_at = await _accepted_on_node_b(world, store, cid_desk)
        await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                    why="Cid's line never took node A's caller")
        await until(lambda: world.first_heard(call.caller_number, "agent", accepted_at), 10,
                    why="the caller never heard Cid's line")
        await cid_phone.wait_hears(line, "caller", after=accepted_at, timeout=10)
        assert cid_phone.invites == invites
        # Cid puts the handset down: node B's BYE on the node leg says normal clearing,
        # so node A ends the call as Cid's (not offered again); node B calls his line again.
        await cid_phone.hang_up(line)
        await until(lambda: all_ended(store, [call.id]), 15, why="the call never ended")
        [row] = await rows(store, [call.id])
        assert row.outcome is CallOutcome.COMPLETED_BY_AGENT
        assert await handoff_is(store, card, HandoffState.COMPLETED)
        line = await cid_phone.wait_call(10)
        assert (await cid_desk.post_json("/api/duty", {"on_duty": False})).status == 200
        async with asyncio.timeout(10):
            await line.ended.wait()  # off duty hangs the line up
        for name, node in nodes.items():
            await until(lambda n=name, p=node: _quiet(layout, n, p),  # type: ignore[misc]
                        10, why=f"a channel or bridge was left on {name}")
        # Cid back on duty with his phone rung per call, for what follows.
        async with store.transaction() as tx:
            await tx.agents.set_open_line(cid.id, False, actor="admin")
        cid_phone.auto_answer, cid_phone.answer = False, "answer"
        assert (await cid_desk.post_json("/api/duty", {"on_duty": True})).status == 200

        # Calls on both nodes; on node A Bea talks to one caller.
        calls = [await place_with_ai(world, store) for _ in range(4)]
        assert sorted(c.node or "" for c in calls) == ["node-a", "node-a", "node-b", "node-b"]
        on_a = [c for c in calls if c.node == "node-a"]
        on_b = [c for c in calls if c.node == "node-b"]
        await ask_for_person(world, on_a[0])
        bea_card = await until(lambda: offered(store, on_a[0].id), 20, step=0.2,
                               why="no card for Bea")
        accepted = await bea_desk_a.post_json(f"/api/handoffs/{bea_card}/accept", {})
        assert accepted.status == 200, await accepted.text()
        await until(lambda: handoff_is(store, bea_card, HandoffState.CONNECTED), 20,
                    step=0.2, why="Bea never talked to the caller")
        # Node B's receptionist is heard too, while A's runs: its request for a person
        # raises a card (each node's receptionist holds a token of its own; with one
        # stored token the two nodes replaced each other's, and B's was refused 401).
        await ask_for_person(world, on_b[0])
        await until(lambda: offered(store, on_b[0].id), 20, step=0.2,
                    why="node B's receptionist never got a card raised")
        await world.hang_up(on_b[0].caller_number)
        await until(lambda: all_ended(store, [on_b[0].id]), 15, why="B's caller never left")
        on_b = on_b[1:]

        # Node A's controller is lost for a moment (its Asterisk lives on, and answers the
        # edge's OPTIONS): A refuses new calls at once (503) and the edge sends them to
        # node B, instead of leaving them to wait in A's dialplan for an app that is
        # gone. Back within its lease, A's controller adopts its calls: Bea's caller
        # still hears her, and the other caller is still with the AI, which hears them.
        await a.signal(signal.SIGKILL)
        during = [await place_with_ai(world, store, within=15) for _ in range(2)]
        assert [c.node for c in during] == ["node-b", "node-b"]
        on_b += during
        a.settings[a.settings.index(f"cluster.lease_s={ADOPT_LEASE_S}")] = (
            f"cluster.lease_s={LEASE_S}")
        await a.start()
        back = time.monotonic()
        await until(lambda: heard(world, on_a[0].caller_number, back, "agent"), 15,
                    step=0.2, why="Bea's caller no longer hears her once A is back")
        assert not await all_lost(store, [on_a[0].id]) and not await all_lost(
            store, [on_a[1].id])
        assert await handoff_is(store, bea_card, HandoffState.CONNECTED)
        # That caller asks for a person: A's controller, back, raises the card (Cid's,
        # on the desk node B serves).
        await ask_for_person(world, on_a[1])
        cid_card = await until(lambda: offered(store, on_a[1].id), 20, step=0.2,
                               why="no card for Cid")
        await until(lambda: _cards(cid_desk, {cid_card}), 10, why="Cid's desk lacks the card")

        # Node A's controller alone is killed for good: its Asterisk keeps the callers,
        # but no controller holds them. Node B ends them once A's lease has run out.
        assert a.proc is not None
        await a.signal(signal.SIGKILL)
        killed = time.monotonic()
        await until(lambda: all_lost(store, [c.id for c in on_a]), LEASE_S + 10, step=0.1,
                    why="node B never ended node A's calls")
        print(f"\nnode A's controller killed: its calls had their outcome after "
              f"{time.monotonic() - killed:.2f} s (lease {LEASE_S} s)")
        await _floor_is_clear(store, cid_desk, [bea_card, cid_card])
        # Node A's controller comes back after that: the ledger says those calls are
        # over, so it hangs up the callers its Asterisk still held.
        await a.start()
        for call in on_a:
            await until(lambda c=call: hung_up(world, c.caller_number),  # type: ignore[misc]
                        15, why="node A kept a caller whose call was ended as pbx_lost")

        # Dee opens her desk at the edge, served by node A, and stays on duty there.
        started = time.monotonic()
        assert layout.hosts is not None
        dee_page, dee_browser = await stack.enter_async_context(_dee_s_desk_at_the_edge(
            edge, proxy, store, a, ca=certificates.ca, folder=tmp_path,
            pc=layout.hosts[AGENT_PC]))
        await _dee_takes_node_b_s_caller_from_node_a(world, store, dee_page, dee_browser)
        print(f"\nDee's desk at the edge: {time.monotonic() - started:.1f} s")

        # Bea's desk phone gets an open line, held on node A (her desk's node).
        async with store.transaction() as tx:
            bea = await tx.agents.by_login("bea")
            assert bea is not None
            await tx.agents.set_open_line(bea.id, True, actor="admin")
        bea_phone.auto_answer = True
        known = set(bea_phone.dialogs)
        for on_duty in (False, True):
            assert (await bea_desk_a.post_json("/api/duty", {"on_duty": on_duty})).status == 200
        line_a = await until(lambda: _new_line(bea_phone, known), 10,
                             why="node A never opened Bea's line")
        # New calls spread over both nodes again; then node A's host dies: every process
        # in its namespace killed, its link down.
        more = [await place_with_ai(world, store) for _ in range(2)]
        assert sorted(c.node or "" for c in more) == ["node-a", "node-b"]
        on_a = [c for c in more if c.node == "node-a"]
        on_b += [c for c in more if c.node == "node-b"]
        # Bea talks to node A's caller through her line when it dies.
        await ask_for_person(world, on_a[0])
        bea_card = await until(lambda: offered(store, on_a[0].id), 20, step=0.2,
                               why="no card for node A's second caller")
        accepted = await bea_desk_a.post_json(f"/api/handoffs/{bea_card}/accept", {})
        assert accepted.status == 200, await accepted.text()
        await until(lambda: handoff_is(store, bea_card, HandoffState.CONNECTED), 20,
                    step=0.2, why="Bea never talked to node A's second caller")
        await layout.kill("node-a", a)
        killed = time.monotonic()
        # Two new calls: round robin sends one of them to the dead node first, unless the
        # edge's probe noticed already; it goes on to node B once A sent nothing back.
        after = [await place_with_ai(world, store, within=15) for _ in range(2)]
        recovered = time.monotonic() - killed
        assert [c.node for c in after] == ["node-b", "node-b"]
        await until(lambda: all_lost(store, [c.id for c in on_a]), LEASE_S + 10, step=0.1,
                    why="node B never ended the dead node's calls")
        print(f"node A's host killed: new calls succeeded after "
              f"{recovered:.2f} s, its calls had their outcome after "
              f"{time.monotonic() - killed:.2f} s")
        # A dead node sends no BYE: the edge hangs up Bea's line with it once node A has
        # been silent for its lease, as node B ends that call.
        await until(line_a.ended.is_set, LEASE_S + 10, step=0.2,
                    why="Bea's desk phone stayed in its call with the dead node")
        # She is still on duty and wants a line: node B, which took node A's calls, calls
        # her phone for it (registered to the edge at the start, never again since).
        line_b = await until(lambda: _new_line(bea_phone, known | {line_a.call_id}),
                             LEASE_S + 10, step=0.2, why="node B never opened Bea's line")
        assert "answer-after=0" in line_b.call_info
        # She signs in to node B's desk (on duty already) and takes a call there through
        # that line: no new INVITE at her phone.
        invites = bea_phone.invites
        bea_desk_b = Browser(b.url, served_at=at_the_edge)
        stack.push_async_callback(bea_desk_b.close)
        assert (await bea_desk_b.login("bea")).status == 303
        await ask_for_person(world, after[0])
        card = await until(lambda: offered(store, after[0].id), 20, step=0.2,
                           why="no card on node B")
        accepted_at = time.monotonic()
        accepted = await bea_desk_b.post_json(f"/api/handoffs/{card}/accept", {})
        assert accepted.status == 200, await accepted.text()
        await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                    why="Bea's line on node B never took node B's call")
        await until(lambda: world.first_heard(after[0].caller_number, "agent", accepted_at),
                    10, why="node B's caller never heard Bea's line")
        assert bea_phone.invites == invites
        assert await active_nodes(edge) == {"node-b"}
        # Nothing lost on the survivor: its calls go on (its receptionist may have asked
        # for a person meanwhile), their callers still on the line.
        for row in await rows(store, [c.id for c in [*on_b, *after]]):
            assert row.state is not CallState.ENDED, (row.caller_number, row.end_cause)
            assert not await hung_up(world, row.caller_number)
        # `switchboard doctor` on a node tells which node holds its lease and which was lost.
        report = Report()
        await examine_cluster(Settings(database=DatabaseSettings(url=database),
                                       cluster=ClusterSettings(
                                           edge_address=layout.host, edge_port=port,
                                           edge_run_dir=edge.spec.run_dir,
                                           edge_https_port=https,
                                           nodes=tuple(
                                               ClusterNodeSettings(n.name, n.host, n.port)
                                               for n in edge.spec.nodes))), report)
        leases = {n["name"]: n["lease"] for n in report.cluster["nodes"]}
        assert leases["node-b"]["state"] == "held"
        assert (leases["node-a"]["state"], leases["node-a"]["taken_over_by"]) == ("lost",
                                                                                "node-b")
        assert any("node-a was lost: node-b ended its calls" in p for p in report.problems)
        # Which nodes the edge serves desks from: node A's dashboard is gone.
        assert report.cluster["edge"]["dashboards"]["serving"] == {"node-a": False,
                                                                   "node-b": True}
        # And which desk phones the edge can ring: none was lost with node A.
        assert report.cluster["edge"]["registered_phones"] == ["desk-bea", "desk-cid",
                                                               "web-dee"]
        for call in [*on_b, *after]:
            await world.hang_up(call.caller_number)
        await until(lambda: all_ended(store, [c.id for c in [*on_b, *after]]), 15,
                    why="node B's calls never ended")
        started = time.monotonic()
        await _dee_s_desk_comes_back_on_node_b(world, store, dee_page, dee_browser, b)
        # Off duty, Bea's and Dee's lines are hung up: nothing is left on node B.
        for desk in (bea_desk_b, dee_browser.desk):
            assert (await desk.post_json("/api/duty", {"on_duty": False})).status == 200
        await until(lambda: _quiet(layout, "node-b", b), 15,
                    why="a channel or bridge was left on node B")
        print(f"Dee's desk back on node B: {time.monotonic() - started:.1f} s")


async def _commands_from_node_b_on_node_a_s_call(
    world: World, store: Store, layout: Layout, nodes: dict[str, Product], *,
    cid_desk: Browser, bea_desk_a: Browser, cid_phone: SipPhone, bea_phone: SipPhone,
) -> None:
    """Cid, on node B's desk, talks to a caller on node A and transfers him to Bea (her
    desk on node A, her desk phone at the edge); then Cid, made a supervisor, takes the
    caller over from node B's board. Node B asks node A each time and answers with node
    A's answer (a transfer to himself refused 409, as on one node); node A rings Bea at
    the edge and reaches Cid on his open line through node B, and the caller hears each
    of them. Last, off duty on one node's desk hangs up his line held on the other."""
    started = time.monotonic()
    async with store.transaction() as tx:
        bea, cid = await tx.agents.by_login("bea"), await tx.agents.by_login("cid")
    assert bea is not None and cid is not None
    call, card, _ = await _accepted_on_node_b(world, store, cid_desk)
    with_cid = await cid_phone.wait_call(20)
    await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                why="Cid never talked to node A's caller")
    panel = f"/api/calls/{call.id}"
    refused = await cid_desk.post_json(f"{panel}/transfer", {"to_agent_id": cid.id})
    assert (refused.status, (await refused.json())["error"]) == (409, "agent_not_available")
    asked = await cid_desk.post_json(f"{panel}/transfer",
                                     {"to_agent_id": bea.id, "note": "wants Bea"})
    assert asked.status == 200, await asked.text()
    transfer = int((await asked.json())["transfer"])
    await until(lambda: _cards(bea_desk_a, {transfer}), 10, why="Bea's desk lacks the card")
    accepted = await bea_desk_a.post_json(f"/api/handoffs/{transfer}/accept", {})
    assert accepted.status == 200, await accepted.text()
    with_bea = await bea_phone.wait_call(20)
    await until(lambda: handoff_is(store, transfer, HandoffState.CONNECTED), 20, step=0.2,
                why="the transfer to Bea never connected")
    async with asyncio.timeout(10):
        await with_cid.ended.wait()  # Cid's part is over: his leg through node B goes
    since = time.monotonic()
    await until(lambda: heard(world, call.caller_number, since, "agent"), 10, step=0.2,
                why="the caller never heard Bea")
    await bea_phone.wait_hears(with_bea, "caller", after=since, timeout=10)

    # Cid, made a supervisor, on duty with his desk phone's open line held on node B.
    async with store.transaction() as tx:
        await tx.agents.set_role(cid.id, AgentRole.SUPERVISOR)
        await tx.agents.set_open_line(cid.id, True, actor="admin")
    cid_phone.auto_answer = True
    # (Duty is refused while his node reads the phone offline.)
    await until(lambda: _phone_reads(layout, nodes, "desk-cid", "online"), 20, step=0.2,
                why="the nodes never read Cid's phone online again")
    for on_duty in (False, True):
        assert (await cid_desk.post_json("/api/duty", {"on_duty": on_duty})).status == 200
    line_b = await cid_phone.wait_call(10)
    invites = cid_phone.invites
    # He listens from node B's board: node A holds the session (node A calls node B for
    # him, and node B moves his line onto that leg: no INVITE at his phone, busy with
    # the line), and node B's board and panel show it.
    listening = await cid_desk.post_json(f"/api/supervisor/calls/{call.id}/listen", {})
    assert listening.status == 200, await listening.text()
    assert await _supervising_shown(cid_desk, call.id) == ("listen", "listen")
    since, media = time.monotonic(), line_b.media
    assert media is not None
    # The caller and Bea, mixed (the Snoop hears both ways): the caller's tone in it.
    await until(lambda: media.first_in_mix("caller", since), 10, step=0.2,
                why="Cid never heard the caller he listens to")
    # Then takes the caller over from there: his session becomes the call's agent leg.
    taken = await cid_desk.post_json(f"/api/supervisor/calls/{call.id}/take_over", {})
    assert taken.status == 200, await taken.text()
    assert cid_phone.invites == invites
    assert await _supervising_shown(cid_desk, call.id) == (None, None)
    async with asyncio.timeout(10):
        await with_bea.ended.wait()
    since = time.monotonic()
    await until(lambda: heard(world, call.caller_number, since, "agent"), 10, step=0.2,
                why="the caller never heard Cid take over")
    await cid_phone.wait_hears(line_b, "caller", after=since, timeout=10)
    async with store.transaction() as tx:
        audit = [(e.actor, e.action, e.detail.get("node")) for e in await tx.audit.recent()
                 if e.subject == f"call:{call.id}" and e.action in ("transfer", "take_over")]
    assert sorted(audit) == [("cid", "take_over", "node-a"), ("cid", "transfer", None)]
    await world.hang_up(call.caller_number)
    await until(lambda: all_ended(store, [call.id]), 15, why="the call never ended")
    [row] = await rows(store, [call.id])
    assert row.outcome is CallOutcome.COMPLETED_BY_AGENT
    assert not line_b.ended.is_set()  # back in its holding bridge on node B

    cid_desk_a = Browser(nodes["node-a"].url, served_at=bea_desk_a.origin)  # the edge's
    try:
        assert (await cid_desk_a.login("cid")).status == 303
        # He takes node A's next card on node A's desk: node A reaches him through node
        # B, on the line node B holds (his phone, busy with it, gets no INVITE).
        second, card = await _caller_asks_for_a_person(world, store)
        await until(lambda: _cards(cid_desk_a, {card}), 10, why="node A's desk lacks the card")
        accepted = await cid_desk_a.post_json(f"/api/handoffs/{card}/accept", {})
        assert accepted.status == 200, await accepted.text()
        await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                    why="Cid's line on node B never took node A's caller")
        assert cid_phone.invites == invites
        since = time.monotonic()
        await until(lambda: heard(world, second.caller_number, since, "agent"), 10, step=0.2,
                    why="the caller never heard Cid")
        await cid_phone.wait_hears(line_b, "caller", after=since, timeout=10)
        await world.hang_up(second.caller_number)
        await until(lambda: all_ended(store, [second.id]), 15, why="the call never ended")
        assert not line_b.ended.is_set()

        # Off duty on node A's desk hangs up the line node B holds; on duty there, node
        # A opens one, which off duty on node B's desk hangs up.
        assert (await cid_desk_a.post_json("/api/duty", {"on_duty": False})).status == 200
        async with asyncio.timeout(10):
            await line_b.ended.wait()
        assert (await cid_desk_a.post_json("/api/duty", {"on_duty": True})).status == 200
    finally:
        await cid_desk_a.close()
    line_a = await cid_phone.wait_call(10)
    async with store.transaction() as tx:
        assert (await tx.agents.get(cid.id)).line_node == "node-a"
    assert (await cid_desk.post_json("/api/duty", {"on_duty": False})).status == 200
    async with asyncio.timeout(10):
        await line_a.ended.wait()  # node A hung it up, asked by node B
    async with store.transaction() as tx:
        assert (await tx.agents.get(cid.id)).line_node is None
        await tx.agents.set_open_line(cid.id, False, actor="admin")
        await tx.agents.set_role(cid.id, AgentRole.AGENT)
    cid_phone.auto_answer = False
    assert (await cid_desk.post_json("/api/duty", {"on_duty": True})).status == 200
    for name, node in nodes.items():
        await until(lambda n=name, p=node: _quiet(layout, n, p),  # type: ignore[misc]
                    10, why=f"a channel or bridge was left on {name}")
    print(f"\ncommands from node B on node A's call: {time.monotonic() - started:.1f} s")


async def _supervising_shown(desk: Browser, call_id: str) -> tuple[str | None, str | None]:
    """What a supervisor's board row and panel say of their session on ``call_id``."""
    async with desk.http.get("/api/supervisor/calls") as response:
        row = next(c for c in (await response.json())["calls"] if c["id"] == call_id)
    async with desk.http.get("/api/calls/current") as response:
        panel = (await response.json())["call"]
    return row["supervising"], panel["supervising"] if panel else None


def _dashboards_at_the_edge(layout: Layout, https: int, dashboards: dict[str, int],
                            certificates: Certificates, *, edge: Edge, folder: Path
                            ) -> DashboardsEdge:
    """HAProxy on the edge's host (as `switchboard edge dashboards` runs it) in front of
    both nodes' dashboards, on the edge's certificate; its stats socket beside
    Kamailio's control socket, where `switchboard doctor` looks for it."""
    return DashboardsEdge(DashboardsSpec(
        layout.host, https, tuple(NodeDashboard(name, layout.address(name), port)
                                  for name, port in dashboards.items()),
        tls_cert=str(certificates.cert), tls_key=str(certificates.key),
        config_dir=str(folder), run_dir=edge.spec.run_dir), folder)


class DeeBrowser:
    """Dee's Chromium profile, and the test's hand on her duty switch (a node's API)."""

    def __init__(self, context: BrowserContext, origin: str, desk: Browser) -> None:
        self.context, self.origin, self.desk = context, origin, desk
        # The INVITEs her phone had when node A last held her line.
        self.invites = 0

    async def duty_on(self, node: Product) -> None:
        """Her duty switch from now on through ``node``'s API (its node died)."""
        await self.desk.close()
        self.desk = Browser(node.url, served_at=self.origin)
        assert (await self.desk.login("dee")).status == 303

    async def close(self) -> None:
        await self.desk.close()

    async def served_by(self) -> str | None:
        """The node the edge serves her desk from: its cookie in her browser."""
        return next((c.get("value") for c in await self.context.cookies(self.origin)
                     if c.get("name") == "sb_node"), None)


@contextlib.asynccontextmanager
async def _dee_s_desk_at_the_edge(edge: Edge, proxy: DashboardsEdge, store: Store,
                                  node_a: Product, *, ca: Path, folder: Path,
                                  pc: NodeHost) -> AsyncIterator[tuple[Page, DeeBrowser]]:
    """Dee's Chromium on her PC opens her desk at the edge's HTTPS address, served by
    node A, her browser softphone registered to the edge over its WebSocket; on duty,
    her line open (node A calls her phone at the edge)."""
    # Dee's account given to the running edge, as `switchboard config edge` does after
    # a person is added; the registrations it holds stay.
    await take_phones(replace(edge.spec, phones=(*edge.spec.phones, DEE)))
    home = folder / "dee-home"
    home.mkdir()
    trust_ca(home, ca)  # her machine trusts the call centre's CA, which signed the edge's
    # Chromium on her PC (Playwright talks to it over pipes, which cross the namespace).
    chromium = home / "chromium-on-dee-s-pc"
    chromium.write_text(f'#!/bin/sh\nexec {" ".join(pc.argv())} env HOME={home} '
                        f'{CHROMIUM} "$@"\n')
    chromium.chmod(0o755)
    build_softphone_bundle()
    spec = proxy.spec
    origin = f"https://{spec.listen_address}:{spec.port}"
    # Node A's controller was restarted: the edge serves desks from it again once its
    # /status answered twice.
    await until(lambda: _serving(proxy, {"node-a", "node-b"}), 15,
                why="the edge never served desks from both nodes")
    async with async_playwright() as playwright, contextlib.AsyncExitStack() as stack:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True,
            args=chromium_args(agent_tone_wav(home / "dee.wav")))
        stack.push_async_callback(browser.close)
        context = await stack.enter_async_context(agent_browser(browser))
        # Her desk was on node A last time: the edge's cookie in her browser says so,
        # and the edge keeps her there while node A is up.
        await context.add_cookies([{"name": "sb_node", "value": "node-a", "url": origin,
                                    "secure": True}])
        page = await context.new_page()
        await sign_in_with_phone(page, origin, "dee")
        dee = DeeBrowser(context, origin, Browser(node_a.url, served_at=origin))
        stack.push_async_callback(dee.close)
        assert await dee.served_by() == "node-a"
        assert DEE.user in await registered_phones(edge.spec)
        # Node A saw her PC's address (the edge's X-Forwarded-For), not the edge's.
        async with store.transaction() as tx:
            agent = await tx.agents.by_login("dee")
            assert agent is not None
            signed_in = await tx.audit.last(f"agent:{agent.id}", "login")
        assert signed_in is not None and signed_in.detail["address"] == pc.address
        assert (await dee.desk.login("dee")).status == 303
        await until(lambda: _on_duty(dee.desk), 15, step=0.5, why="Dee could not go on duty")
        # Her tab asks for its open line at once: node A calls her phone at the edge.
        await expect(page.locator("#line-status")).to_have_attribute("data-line", "open",
                                                                     timeout=20_000)
        yield page, dee


async def _dee_takes_node_b_s_caller_from_node_a(world: World, store: Store, page: Page,
                                                 dee: DeeBrowser) -> None:
    """A caller on node B, Dee taking the card on her desk on node A: node A moves her
    open line, node B calls node A for her on its node trunk, and the caller hears her
    through both nodes; she gives the caller back to the AI and her line waits again."""
    call, card = await _caller_asks_for_a_person(world, store, "node-b")
    accept = page.locator(f'li.card[data-handoff-id="{card}"]').get_by_role(
        "button", name="Accept")
    await expect(accept).to_be_enabled(timeout=15_000)
    accepted_at = time.monotonic()
    await accept.click()
    await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                why="Dee's line never took node B's caller")
    await until(lambda: heard(world, call.caller_number, accepted_at, "agent"), 15,
                step=0.2, why=lambda: "the caller never heard Dee: "
                + _what_heard(world, call.caller_number, accepted_at))
    await page.click("#call-return")
    await until(lambda: handoff_is(store, card, HandoffState.RETURNED_TO_AI), 15,
                step=0.2, why="the caller never went back to the AI")
    [row] = await rows(store, [call.id])
    assert row.state is CallState.WITH_AI
    await world.hang_up(call.caller_number)
    await until(lambda: all_ended(store, [call.id]), 15, why="the call never ended")
    await expect(page.locator("#line-status")).to_have_attribute("data-line", "open",
                                                                 timeout=15_000)
    dee.invites = await _invites(page)


async def _dee_s_desk_comes_back_on_node_b(world: World, store: Store, page: Page,
                                           dee: DeeBrowser, node_b: Product) -> None:
    """Node A's host died under Dee's desk. The edge found node A's dashboard down and
    closed her desk's connections to it; her tab's WebSocket reconnected through the
    edge, which serves it from node B now. Her line, hung up by the SIP edge with the
    dead node, is asked for again by her tab and node B opens it: she takes node B's
    next caller and ends the call."""
    await until(lambda: _served_by(dee, "node-b"), 30,
                why="the edge never served Dee's desk from node B")
    await expect(page.locator("body")).to_have_attribute("data-live", "yes")
    # Her line again: node B called her phone (a new INVITE), and it is up.
    await until(lambda: _line_renewed(page, dee.invites), 30,
                why="node B never opened Dee's line")
    invites = await _invites(page)
    call, card = await _caller_asks_for_a_person(world, store, "node-b")
    accept = page.locator(f'li.card[data-handoff-id="{card}"]').get_by_role(
        "button", name="Accept")
    await expect(accept).to_be_enabled(timeout=15_000)
    accepted_at = time.monotonic()
    await accept.click()
    await until(lambda: handoff_is(store, card, HandoffState.CONNECTED), 20, step=0.2,
                why="Dee's line on node B never took node B's caller")
    await until(lambda: heard(world, call.caller_number, accepted_at, "agent"), 15,
                step=0.2, why=lambda: "node B's caller never heard Dee: "
                + _what_heard(world, call.caller_number, accepted_at))
    assert await _invites(page) == invites  # through her line: nothing rang
    await page.click("#call-end")
    await until(lambda: all_ended(store, [call.id]), 15, why="Dee's call never ended")
    [row] = await rows(store, [call.id])
    assert row.outcome is CallOutcome.COMPLETED_BY_AGENT
    await dee.duty_on(node_b)


async def _serving(proxy: DashboardsEdge, names: set[str]) -> bool:
    return {name for name, up in (await nodes_up(proxy.spec)).items() if up} == names


async def _served_by(dee: DeeBrowser, node: str) -> bool:
    return await dee.served_by() == node


async def _invites(page: Page) -> int:
    """The INVITEs that reached her browser phone (an open line's call is one)."""
    return int(await page.evaluate("window.switchboardPhone.invites"))


async def _line_renewed(page: Page, invites: int) -> bool:
    """Her phone took a line called after ``invites``, and it is open."""
    return (await _invites(page) > invites and await page.locator("#line-status")
            .get_attribute("data-line") == "open")


def _tell_why(failed: type[BaseException] | None, nodes: dict[str, Product]) -> None:
    if failed is not None:
        for name, node in nodes.items():
            print(f"--- {name}'s last lines:\n{''.join(node.output[-60:])}")
            with contextlib.suppress(OSError, KeyError):
                log = Path(str(node.state()["log"])).read_text().splitlines()[-40:]
                print(f"--- {name}'s Asterisk:\n" + "\n".join(log))


async def _dispatching(edge: Edge, names: set[str]) -> bool:
    return await active_nodes(edge) == names


async def _cards(desk: Browser, expected: set[int]) -> bool:
    return {card["handoff_id"] for card in (await board(desk))["cards"]} == expected


async def _floor_is_clear(store: Store, desk: Browser, handoffs: list[int]) -> None:
    """The lost calls' handoffs failed, nobody is busy with them, and no card is left on
    the desk of the node that survived."""
    async with store.transaction() as tx:
        for handoff_id in handoffs:
            handoff = await tx.handoffs.get(handoff_id)
            assert (handoff.state, handoff.failure_reason) == (HandoffState.FAILED,
                                                               FailureReason.PBX_LOST)
        assert await tx.agents.busy_agent_ids() == set()
    snapshot: dict[str, Any] = await board(desk)
    assert snapshot["cards"] == []


async def _on_duty(desk: Browser) -> bool:
    return (await desk.post_json("/api/duty", {"on_duty": True})).status == 200


def _new_line(phone: SipPhone, known: set[str]) -> Dialog | None:
    """A call the phone answered by itself (an open line) that is not one of ``known``."""
    return next((dialog for call_id, dialog in phone.dialogs.items()
                 if call_id not in known and dialog.confirmed.is_set()
                 and not dialog.ended.is_set() and "answer-after" in dialog.call_info),
                None)


async def _caller_asks_for_a_person(world: World, store: Store, node: str = "node-a"
                                    ) -> tuple[Call, int]:
    """A caller on ``node`` asks for a person: the call and its card. The edge deals calls
    round robin: of two calls in a row one is on that node (the other hangs up)."""
    call = await place_with_ai(world, store)
    if call.node != node:
        await world.hang_up(call.caller_number)
        call = await place_with_ai(world, store)
    assert call.node == node
    await ask_for_person(world, call)
    return call, await until(lambda: offered(store, call.id), 20, step=0.2, why="no card")


async def _accepted_on_node_b(
    world: World, store: Store, desk: Browser,
    before_accept: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Call, int, float]:
    """A caller on node A asks for a person and Cid takes the card on node B's desk
    (after ``before_accept``, with the card on his desk): the call, its card, and when
    he clicked."""
    call, card = await _caller_asks_for_a_person(world, store)
    await until(lambda: _cards(desk, {card}), 10, why="node B's desk lacks the card")
    if before_accept is not None:
        await before_accept()
    accepted_at = time.monotonic()
    accepted = await desk.post_json(f"/api/handoffs/{card}/accept", {})
    assert accepted.status == 200, await accepted.text()
    return call, card, accepted_at


async def _quiet(layout: Layout, name: str, node: Product) -> bool:
    """The node's Asterisk holds no channel and no bridge."""
    return not [*await _ari(layout, name, node, "channels"),
                *await _ari(layout, name, node, "bridges")]


async def _ari(layout: Layout, name: str, node: Product, what: str) -> Any:
    """GET ``what`` of the node's ARI (asked on its host: ARI listens on its loopback)."""
    state: dict[str, Any] = node.state()
    proc = await asyncio.create_subprocess_exec(
        *layout.on_host(name, "curl", "-sf", "-u",
                        f"{state['ari_user']}:{state['ari_password']}",
                        f"{state['ari_url']}/{what}"),
        stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0]
    assert proc.returncode == 0, f"ARI of {name}: curl {proc.returncode}"
    return json.loads(out)


async def _phone_reads(layout: Layout, nodes: dict[str, Product], sip_user: str,
                       state: str) -> bool:
    """Every node's Asterisk reads the agent's phone in ``state`` (online, offline)."""
    states = [(await _ari(layout, name, node, f"endpoints/PJSIP/{sip_user}"))["state"]
              for name, node in nodes.items()]
    return states == [state] * len(nodes)


@contextlib.contextmanager
def _options_dropped(sip_user: str, edge: int) -> Iterator[None]:
    """The nodes' OPTIONS to the agent's phone at the edge (their qualify) are dropped on
    their way in; INVITEs and the rest still reach the edge. By nftables on this host,
    in a table of a fixed name, removed first and after."""
    prefix = f"OPTIONS sip:{sip_user}@".encode()
    match = " ".join(f"@ih,{8 * at},{8 * len(chunk)} 0x{chunk.hex()}"
                     for at in range(0, len(prefix), 16) for chunk in [prefix[at:at + 16]])
    table = "inet sb_cluster_qualify"
    subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True,
                   check=False)
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        f"table {table} {{\n chain input {{\n type filter hook input priority 0;\n"
        f" udp dport {edge} {match} drop\n }}\n}}\n"))
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", *table.split()], check=True)


def _what_heard(world: World, caller: str, since: float) -> str:
    """How many 20 ms frames of whom ``caller`` heard since ``since`` (a failure's why)."""
    return str(Counter(r.who or ("~" if r.voiced else "-")
                       for r in world.probes[caller].received if r.at >= since))
