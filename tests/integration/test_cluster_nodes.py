"""A node lost without losing the floor: two `switchboard run` nodes behind the edge on
one PostgreSQL, each its own embedded Asterisk and controller, node names and leases.

Real parts throughout: Kamailio (Debian's) dispatches a carrier Asterisk's calls to the
two nodes, the product's own controllers answer them with the built-in receptionist,
Bea's and Cid's SIP desk phones are registered to the edge, which each node calls them
through. On 127.0.0.1 with
ports of their own, not in network namespaces (tests/integration/test_cluster_edge.py
says why). First node A's controller alone is killed (its Asterisk keeps the calls):
node B ends them once A's lease runs out, and A's controller, back after that, hangs
up what is left of them. Then the whole of node A (its Asterisk and its controller) is
killed with SIGKILL: new calls go to node B, which ends A's calls as pbx_lost, and
Bea, who took her first call on node A, takes the next on node B with the same
registration (her phone never registers again).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from handoff.agents import EndpointKind
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.settings import ClusterNodeSettings, ClusterSettings, DatabaseSettings, Settings
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Call
from handoff.trunks import Trunk
from pbx import runtime
from pbx.ari import AriError
from pbx.edge import Edge, take_phones
from pbx.kamailio_config import EdgeNode, EdgePhone, EdgeSpec
from pbx.ports import free_port
from pbx.trunk_config import SipTrunk
from tests.integration.test_cluster_edge import active_nodes, edge_port
from tests.integration.test_controller_kill import board
from tests.integration.test_external_asterisk import database, hears_voice, offered
from tests.product_run import Product, stopped_after
from tests.sip_phone import SipError, SipPhone
from tests.waiting import until
from web.bench.dashboard_site import PASSWORD, Browser, cheap_passwords
from web.bench.world import World
from web.doctor import Report, examine_cluster

__all__ = ["database"]

pytestmark = pytest.mark.integration

LEASE_S = 6
# Failed sign-ins at the edge before the sender is blocked.
GUESSES = 3
MAX_CALLS = 10


@contextlib.asynccontextmanager
async def carrier_world(installation: runtime.Installation, state_dir: Path,
                        edge: int) -> AsyncIterator[World]:
    """A carrier Asterisk whose one trunk is the edge, and the callers it places."""
    carrier = runtime.new_instance(
        installation, f"n{os.getpid()}-carrier", state_dir, max_calls=MAX_CALLS,
        ports=runtime.allocate_ports(runtime.PortRequest(), max_calls=MAX_CALLS),
        app="carrier", trunks=(SipTrunk("switchboard", "127.0.0.1", edge),))
    await carrier.start()
    world = World(carrier.ari_url, carrier.ari_auth)
    try:
        await world.start()
        yield world
    finally:
        await world.close()
        await carrier.stop()


async def calls_of(store: Store, callers: list[str]) -> dict[str, Call]:
    """The ledger's row of each of these callers' calls (the last, if several)."""
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

    return await until(with_ai, within, step=0.1, why=f"the call from {caller} never "
                       "reached a node's AI")


async def ask_for_person(world: World, call: Call) -> None:
    """The caller presses 0 once the receptionist speaks (it listens from then on)."""
    await until(lambda: hears_voice(world, call.caller_number, 0), 20, step=0.2,
                why=f"{call.caller_number} never heard the receptionist")
    await world.press(call.caller_number, "0")


async def test_a_lost_node_s_calls_end_as_pbx_lost_on_the_survivor_and_new_calls_go_there(
    database: str, installation: runtime.Installation, state_dir: Path, tmp_path: Path,
) -> None:
    taken: set[int] = set()
    port = edge_port(frozenset(taken))
    sip = {name: free_port(socket.SOCK_DGRAM, frozenset({port, *taken}))
           for name in ("node-a", "node-b")}
    assert len({port, *sip.values()}) == 3
    nodes = {name: Product(tmp_path / name, free_port(), settings=[
        f"database.url={database}", f"asterisk.sip_port={sip[name]}",
        "demo.test_caller=false", f"cluster.node={name}", f"cluster.lease_s={LEASE_S}",
        "cluster.edge_address=127.0.0.1", f"cluster.edge_port={port}",
    ]) for name in sip}
    a, b = nodes["node-a"], nodes["node-b"]
    folder = tmp_path / "edge"
    folder.mkdir()
    edge = Edge(EdgeSpec("127.0.0.1", port, tuple(EdgeNode(name, "127.0.0.1", sip[name])
                                                  for name in sip),
                         carriers=("127.0.0.1",), config_dir=str(folder),
                         run_dir=str(folder / "run"), probe_interval_s=1,
                         phones=tuple(EdgePhone(f"desk-{login}", f"{login}-sip-secret")
                                      for login in ("bea", "cid")), block_after=GUESSES,
                         lease_s=LEASE_S),
                folder)
    engine = create_store_engine(database)
    store = Store(engine)
    desks: list[Browser] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        # The shared store's people and trunk, written once for every node; the nodes
        # start one after the other (the first seeds the demo's receptionist).
        await upgrade_to_head(engine)
        async with store.transaction() as tx:
            await tx.trunks.create(Trunk(name="edge", host="127.0.0.1", port=port))
            for login in ("bea", "cid"):
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
        world = await stack.enter_async_context(carrier_world(installation, state_dir, port))
        # Both desk phones register to the edge (digest against their agents' SIP
        # passwords), once for the whole test.
        bea_phone = await stack.enter_async_context(SipPhone(
            "desk-bea", "bea-sip-secret", ("127.0.0.1", port)))
        await stack.enter_async_context(SipPhone(
            "desk-cid", "cid-sip-secret", ("127.0.0.1", port)))
        # A person added meanwhile: refused until the running edge is given the accounts
        # again (`switchboard config edge`), which keeps every registration it has.
        dan = ("desk-dan", "dan-sip-secret", ("127.0.0.1", port))
        with pytest.raises(SipError):
            async with SipPhone(*dan):
                pass
        assert await take_phones(replace(edge.spec, phones=(
            *edge.spec.phones, EdgePhone("desk-dan", "dan-sip-secret")))) == (3, 0)
        async with SipPhone(*dan) as dan_phone:
            assert dan_phone.registered
        # Someone guessing Bea's password from another address is refused, then blocked:
        # even her right password is refused from there, not from her phone's address.
        for guess in range(GUESSES):
            with pytest.raises(SipError) as wrong:
                async with SipPhone("desk-bea", f"guess-{guess}-xyz", ("127.0.0.1", port),
                                    host="127.0.0.9"):
                    pass
            assert wrong.value.status == (401 if guess < GUESSES - 1 else 403)
        with pytest.raises(SipError) as blocked:
            async with SipPhone("desk-bea", "bea-sip-secret", ("127.0.0.1", port),
                                host="127.0.0.9"):
                pass
        assert blocked.value.status == 403
        bea_phone.answer = "answer"
        for login, node in (("bea", a), ("cid", b)):
            desk = Browser(node.url)
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

        # Calls on both nodes; on node A Bea talks to one caller, another waits for a
        # person (Cid's card, on the desk node B serves).
        calls = [await place_with_ai(world, store) for _ in range(4)]
        assert sorted(c.node or "" for c in calls) == ["node-a", "node-a", "node-b", "node-b"]
        on_a = [c for c in calls if c.node == "node-a"]
        on_b = [c for c in calls if c.node == "node-b"]
        await ask_for_person(world, on_a[0])
        bea_card = await until(lambda: offered(store, on_a[0].id), 20, step=0.2,
                               why="no card for Bea")
        accepted = await bea_desk_a.post_json(f"/api/handoffs/{bea_card}/accept", {})
        assert accepted.status == 200, await accepted.text()
        await until(lambda: _handoff_is(store, bea_card, HandoffState.CONNECTED), 20,
                    step=0.2, why="Bea never talked to the caller")
        await ask_for_person(world, on_a[1])
        cid_card = await until(lambda: offered(store, on_a[1].id), 20, step=0.2,
                               why="no card for Cid")
        await until(lambda: _cards(cid_desk, {cid_card}), 10, why="Cid's desk lacks the card")

        # Node A's controller alone is killed: its Asterisk keeps the callers, but no
        # controller holds them. Node B ends them once A's lease has run out.
        assert a.proc is not None
        await a.signal(signal.SIGKILL)
        killed = time.monotonic()
        await until(lambda: _all_lost(store, [c.id for c in on_a]), LEASE_S + 10, step=0.1,
                    why="node B never ended node A's calls")
        print(f"\nnode A's controller killed: its calls had their outcome after "
              f"{time.monotonic() - killed:.2f} s (lease {LEASE_S} s)")
        await _floor_is_clear(store, cid_desk, [bea_card, cid_card])
        # Node A's controller comes back after that: the ledger says those calls are
        # over, so it hangs up the callers its Asterisk still held.
        await a.start()
        for call in on_a:
            await until(lambda c=call: _hung_up(world, c.caller_number),  # type: ignore[misc]
                        15, why="node A kept a caller whose call was ended as pbx_lost")

        # New calls spread over both nodes again; then the whole of node A dies.
        more = [await place_with_ai(world, store) for _ in range(2)]
        assert sorted(c.node or "" for c in more) == ["node-a", "node-b"]
        on_a = [c for c in more if c.node == "node-a"]
        on_b += [c for c in more if c.node == "node-b"]
        # Bea talks to node A's caller when it dies.
        await ask_for_person(world, on_a[0])
        bea_card = await until(lambda: offered(store, on_a[0].id), 20, step=0.2,
                               why="no card for node A's second caller")
        accepted = await bea_desk_a.post_json(f"/api/handoffs/{bea_card}/accept", {})
        assert accepted.status == 200, await accepted.text()
        await until(lambda: _handoff_is(store, bea_card, HandoffState.CONNECTED), 20,
                    step=0.2, why="Bea never talked to node A's second caller")
        pbx_pid = a.state()["asterisk_pid"]
        assert isinstance(pbx_pid, int)
        os.killpg(pbx_pid, signal.SIGKILL)
        await a.signal(signal.SIGKILL)
        killed = time.monotonic()
        # Two new calls: round robin sends one of them to the dead node first, unless the
        # edge's probe noticed already; it goes on to node B once A sent nothing back.
        after = [await place_with_ai(world, store, within=15) for _ in range(2)]
        recovered = time.monotonic() - killed
        assert [c.node for c in after] == ["node-b", "node-b"]
        # Node A is all gone: nothing of it for a later run to stop.
        (a.data / "run" / "switchboard.json").unlink()
        await until(lambda: _all_lost(store, [c.id for c in on_a]), LEASE_S + 10, step=0.1,
                    why="node B never ended the dead node's calls")
        print(f"node A killed (Asterisk and controller): new calls succeeded after "
              f"{recovered:.2f} s, its calls had their outcome after "
              f"{time.monotonic() - killed:.2f} s")
        assert await active_nodes(edge) == {"node-b"}
        # A dead node sends no BYE: the edge hangs up Bea's phone's call with it once
        # node A has been silent for its lease, as node B ends that call.
        await until(lambda: _phone_idle(bea_phone), LEASE_S + 10, step=0.2,
                    why="Bea's desk phone stayed in its call with the dead node")
        # Bea, whose call was on node A, signs in to node B's desk and takes a
        # call there: node B rings the phone she registered to the edge at the start.
        bea_desk_b = Browser(b.url)
        stack.push_async_callback(bea_desk_b.close)
        assert (await bea_desk_b.login("bea")).status == 303
        assert (await bea_desk_b.post_json("/api/duty", {"on_duty": True})).status == 200
        await ask_for_person(world, after[0])
        card = await until(lambda: offered(store, after[0].id), 20, step=0.2,
                           why="no card on node B")
        accepted = await bea_desk_b.post_json(f"/api/handoffs/{card}/accept", {})
        assert accepted.status == 200, await accepted.text()
        await until(lambda: _handoff_is(store, card, HandoffState.CONNECTED), 20,
                    step=0.2, why="Bea's phone, registered to the edge, never took node B's "
                    "call")
        assert bea_phone.invites == 3
        # Nothing lost on the survivor: its calls go on (its receptionist may have asked
        # for a person meanwhile), their callers still on the line.
        for row in await rows(store, [c.id for c in [*on_b, *after]]):
            assert row.state is not CallState.ENDED, (row.caller_number, row.end_cause)
            assert not await _hung_up(world, row.caller_number)
        # `switchboard doctor` on a node tells which node holds its lease and which was lost.
        report = Report()
        await examine_cluster(Settings(database=DatabaseSettings(url=database),
                                       cluster=ClusterSettings(
                                           edge_address="127.0.0.1", edge_port=port,
                                           edge_run_dir=edge.spec.run_dir,
                                           nodes=tuple(
                                               ClusterNodeSettings(n.name, n.host, n.port)
                                               for n in edge.spec.nodes))), report)
        leases = {n["name"]: n["lease"] for n in report.cluster["nodes"]}
        # And which desk phones the edge can ring: none was lost with node A.
        assert report.cluster["edge"]["registered_phones"] == ["desk-bea", "desk-cid"]
        assert leases["node-b"]["state"] == "held"
        assert (leases["node-a"]["state"], leases["node-a"]["taken_over_by"]) == ("lost",
                                                                                "node-b")
        assert any("node-a was lost: node-b ended its calls" in p for p in report.problems)
        for call in [*on_b, *after]:
            await world.hang_up(call.caller_number)
        await until(lambda: _all_ended(store, [c.id for c in [*on_b, *after]]), 15,
                    why="node B's calls never ended")


def _tell_why(failed: type[BaseException] | None, nodes: dict[str, Product]) -> None:
    if failed is not None:
        for name, node in nodes.items():
            print(f"--- {name}'s last lines:\n{''.join(node.output[-60:])}")
            with contextlib.suppress(OSError, KeyError):
                log = Path(str(node.state()["log"])).read_text().splitlines()[-40:]
                print(f"--- {name}'s Asterisk:\n" + "\n".join(log))


async def _hung_up(world: World, caller: str) -> bool:
    """Whether the carrier's leg of ``caller``'s call is gone (the node hung it up)."""
    try:
        await world.ari.channels.get(world._outbound[caller])
    except AriError as exc:
        return exc.status == 404
    return False


async def _on_duty(desk: Browser) -> bool:
    return (await desk.post_json("/api/duty", {"on_duty": True})).status == 200


async def _phone_idle(phone: SipPhone) -> bool:
    return all(dialog.ended.is_set() for dialog in phone.dialogs.values())


async def _dispatching(edge: Edge, names: set[str]) -> bool:
    return await active_nodes(edge) == names


async def _handoff_is(store: Store, handoff_id: int, state: HandoffState) -> bool:
    async with store.transaction() as tx:
        return (await tx.handoffs.get(handoff_id)).state is state


async def _cards(desk: Browser, expected: set[int]) -> bool:
    return {card["handoff_id"] for card in (await board(desk))["cards"]} == expected


async def _all_lost(store: Store, call_ids: list[str]) -> bool:
    return all(row.outcome is CallOutcome.PBX_LOST for row in await rows(store, call_ids))


async def _all_ended(store: Store, call_ids: list[str]) -> bool:
    return all(row.state is CallState.ENDED for row in await rows(store, call_ids))


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
