"""`switchboard bench handoff --cross-node`: what the leg between two nodes costs.

Node A is the benchmark's PBX (the carrier's callers reach it) with the rig's controller;
node B is a second Asterisk where Ada's desk phone is also reachable (at the carrier's
7001, as from node A), with a controller of its own. Both controllers share the rig's
store and, being in one process here, its event hub: in a cluster the hub's node events
travel as PostgreSQL notifications between processes (handoff.shared_events), which
this benchmark leaves out, so it measures the SIP and media path, not the database.

Calls alternate: one accepted on node A (A rings Ada itself, as on one box), one
accepted on node B (A calls B on the node trunk, B rings Ada and bridges her with that
leg: handoff.live.xnode), so both kinds meet the same load. Each is measured as
web.bench.handoff measures a handoff: connect time and the caller's longest gap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from handoff.controller import LiveServices, build_controller
from handoff.live import call_key
from handoff.store import Store
from pbx import runtime
from pbx.ari import AriClient
from pbx.asterisk_config import NodePeer, SipAgent
from pbx.runtime import AsteriskInstance
from pbx.trunk_config import SipTrunk
from web.bench.rig import AGENT_SIP_USER, Pair, Rig
from web.bench.world import AGENT_PHONE_NUMBER

NODE_A, NODE_B = "node-a", "node-b"


@contextlib.asynccontextmanager
async def node_b(installation: runtime.Installation, state_dir: Path, pair: Pair,
                 r: Rig) -> AsyncIterator[LiveServices]:
    """A second node beside the rig's PBX, with Ada's phone and its own controller
    (not the caller's node: no trunk from the carrier's callers reaches it)."""
    pbx, carrier = pair.pbx, pair.carrier
    taken = frozenset(port for spec in (pbx.spec, carrier.spec) for port in (
        spec.ports.http, spec.ports.sip, spec.ports.ami, spec.ports.rtp_start))
    ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken,
                                   max_calls=pbx.spec.max_calls)
    b = runtime.new_instance(
        installation, f"bench{os.getpid()}-nodeb", state_dir, ports=ports,
        max_calls=pbx.spec.max_calls,
        agents=(SipAgent(AGENT_SIP_USER, "desk-ada-secret", "deskphone", "Ada",
                         contact=f"sip:{AGENT_PHONE_NUMBER}@127.0.0.1:{carrier.spec.ports.sip}"),),
        peers=(NodePeer(NODE_A, "127.0.0.1", pbx.spec.ports.sip),),
    )
    await b.start()
    try:
        # Node A gets its trunk to node B, and the carrier takes node B's calls to Ada.
        await _reload_with(pbx, peers=(NodePeer(NODE_B, "127.0.0.1", ports.sip),))
        await _reload_with(carrier, trunks=(*carrier.spec.trunks,
                                            SipTrunk(NODE_B, "127.0.0.1", ports.sip)))
        ari = AriClient(b.ari_url, *b.ari_auth, apps="switchboard", key=call_key)
        live = build_controller(ari, Store(r.store.engine, node=NODE_B), r.control.hub,
                                timing=r.control.timing)
        await ari.start()
        await ari.wait_ready(10)
        try:
            yield live
        finally:
            await live.close()
            await ari.close()
    finally:
        await b.stop()


async def _reload_with(instance: AsteriskInstance, **changed: Any) -> None:
    instance.spec = dataclasses.replace(instance.spec, **changed)
    await instance.apply_directory(instance.spec.routes, instance.spec.agents)
