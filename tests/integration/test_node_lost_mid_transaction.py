"""A cluster node whose host dies in the middle of a transaction, on a host of its own
(a network namespace: web.bench.cluster_hosts) and the real PostgreSQL.

Its controller's connection sends no FIN: its link is down before it is killed, as when
a machine loses power. The rows its last transaction locked (its lease, its call) stay
locked until the server drops that connection; a survivor must still end its calls
within seconds, not when TCP gives up on the dead peer two hours later.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from handoff.calls import CallOutcome
from handoff.events import EventHub
from handoff.nodes import NodeLease
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.waiting import until
from web.app import running
from web.bench.cluster_hosts import HOST_ADDRESS, PREFIX, NodeHost, cluster_hosts, kill_host
from web.bench.postgres_server import private_postgres
from web.bench.product_run import REPO

pytestmark = pytest.mark.integration

# Node A's controller in its last moments: its lease renewed (for one second) and its
# call written, in a transaction it never ends.
LAST_TRANSACTION = """
import asyncio, sys
from datetime import timedelta
from handoff.store import Store, create_store_engine

async def main(url: str, call_id: str) -> None:
    store = Store(create_store_engine(url), node="node-a")
    async with store.transaction() as tx:
        await tx.nodes.renew("node-a", timedelta(seconds=1))
        await tx.calls.set_legs(call_id, agent_channel_id="gone-with-its-host")
        print("locked", flush=True)
        await asyncio.sleep(600)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
def host_and_database() -> Iterator[tuple[NodeHost, str]]:
    with cluster_hosts(("node-a",)) as hosts, private_postgres(
            also_on=HOST_ADDRESS, network=f"{HOST_ADDRESS}/{PREFIX}") as database:
        yield hosts["node-a"], database


async def test_a_node_whose_host_dies_mid_transaction_has_its_calls_ended_by_a_survivor(
    host_and_database: tuple[NodeHost, str],
) -> None:
    host, database = host_and_database
    engine = create_store_engine(database)
    try:
        await upgrade_to_head(engine)
        a, b = Store(engine, node="node-a"), Store(engine, node="node-b")
        async with a.transaction() as tx:
            await tx.nodes.renew("node-a", timedelta(seconds=1))
            call = await tx.calls.create(caller_number="+33100000001",
                                         caller_channel_id="caller-on-a")
        # Node A's controller, on its host, reaches the database over its link.
        remote = make_url(database).set(host=HOST_ADDRESS).render_as_string(
            hide_password=False)
        node_a = await asyncio.create_subprocess_exec(
            *host.argv(sys.executable, "-c", LAST_TRANSACTION, remote, call.id),
            cwd=REPO, stdout=asyncio.subprocess.PIPE)
        assert node_a.stdout is not None
        assert await asyncio.wait_for(node_a.stdout.readline(), 60) == b"locked\n"
        kill_host(host)
        await asyncio.wait_for(node_a.wait(), 30)

        survivor = NodeLease(b, EventHub(), lease_s=6)
        await survivor.hold()

        async def lost() -> bool:
            async with b.transaction() as tx:
                return (await tx.calls.get(call.id)).outcome is CallOutcome.PBX_LOST

        async with running(survivor.run(), "node-b's lease"):
            await until(lost, 30, step=0.2,
                        why="node B never ended the call of node A, dead mid-transaction")
        async with b.transaction() as tx:
            nodes = {node.name: node for node in await tx.nodes.all()}
        assert nodes["node-a"].lost_to == "node-b"
    finally:
        await engine.dispose()
