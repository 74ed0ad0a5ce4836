"""A cluster node's lease, and what a surviving controller does when a node is lost.

A node is an Asterisk and the controller that drives it; only that controller can reach
the callers' legs in that Asterisk (ARI listens on the node's loopback). Each controller
holds its node's lease in the shared database and renews it every third of the lease.
When a lease expires, the node is gone for the others: its host, its Asterisk, or its
controller (killed, or cut off from the database). One surviving controller then claims
the node (a conditional UPDATE: exactly one wins) and, in that same transaction, ends
the node's open calls with the outcome ``pbx_lost``: their handoffs fail, so the agents
on them are free again, and their cards leave every board through the shared events.

A node's controller that comes back in time (its lease renewed before it expired, or
expired with no survivor to claim it yet) keeps its calls: they stay open in the
ledger, and its reconciliation adopts them. One that comes back after a survivor took
its calls finds them ended in the ledger, and hangs their legs up: the record says the
call is over and its agent free (perhaps already on another call), so the caller must
not stay on a line nobody answers for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from handoff.calls import CallOutcome
from handoff.events import CARDS_TOPIC, CallEnded, EventHub
from handoff.handoffs import FailureReason
from handoff.live.reconcile import close_unheard
from handoff.store import Store
from handoff.store.errors import lock_not_available
from pbx.event_link import LinkSettings, LinkSupervisor

log = logging.getLogger(__name__)

# Seconds a node's calls are kept after its last renewal: long enough for two renewals
# to fail (a slow database, a dropped connection) without losing the node, short enough
# that agents held by a dead node's calls are free again within seconds.
DEFAULT_LEASE_S = 10.0


class NodeLease:
    """Holds ``store.node``'s lease while :meth:`run` runs, and ends the calls of nodes
    whose lease expired. ``taken_over`` runs when this node learns, on renewing, that a
    survivor ended its calls meanwhile (the controller hangs up what is left of them).
    ``reopen_lines`` is given the desk phones (agent id, SIP user) whose open line a lost
    node held and this one now calls again."""

    def __init__(self, store: Store, hub: EventHub, *, lease_s: float = DEFAULT_LEASE_S,
                 taken_over: Callable[[], Awaitable[None]] | None = None,
                 reopen_lines: Callable[[list[tuple[int, str]]], Awaitable[None]] | None = None,
                 ) -> None:
        if not store.node:
            raise ValueError("a node lease needs the store of a named node (cluster.node)")
        self.name = store.node
        self._store = store
        self._hub = hub
        self.lease = timedelta(seconds=lease_s)
        self.every_s = lease_s / 3
        self._taken_over = taken_over
        self._reopen_lines = reopen_lines
        self.link = LinkSupervisor(f"node {self.name}'s lease", LinkSettings(), log)

    async def hold(self) -> None:
        """Renew once: before the controller reconciles, so that a survivor cannot take
        the calls it is about to adopt."""
        async with self._store.transaction() as tx:
            taken_by = await tx.nodes.renew(self.name, self.lease)
        self.link.up()
        if taken_by is not None:
            log.warning("node %s: its lease had expired and %s ended its calls (pbx_lost); "
                        "their legs still here are hung up", self.name, taken_by)
            if self._taken_over is not None:
                await self._taken_over()

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.every_s)
                try:
                    await self.hold()
                    await self.take_over()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if lock_not_available(exc):
                        # A lost node's last transaction still holds its rows (its host
                        # died in it): the server drops it within seconds; claimed then.
                        log.warning("node %s: a lost node's rows are still locked; its "
                                    "calls are ended at the next look", self.name)
                        continue
                    # The database out of reach: try again next time.
                    self.link.down(f"{type(exc).__name__}: {exc}")
        finally:
            self.link.close()

    async def take_over(self) -> list[str]:
        """End the open calls of every node whose lease expired and that no other
        survivor claimed; returns those calls' ids."""
        ended: list[str] = []
        lines: list[tuple[int, str]] = []
        async with self._store.transaction() as tx:
            # Not waiting on a lock longer than half a renewal period: this node's own
            # lease must be renewed on time whatever the lost node left locked.
            lost = await tx.nodes.claim_lost(self.name, wait=timedelta(seconds=self.every_s / 2))
            for node in lost:
                calls = await tx.calls.open_calls(node=node)
                for call in calls:
                    await close_unheard(tx, call.id, CallOutcome.PBX_LOST,
                                        f"node {node} lost", FailureReason.PBX_LOST)
                    ended.append(call.id)
                # Its agents on duty keep their desk phones' open lines: called again
                # from here (the lost node's Asterisk held the lines' only legs).
                lines += [(agent.id, agent.sip_user)
                          for agent in await tx.agents.take_lines(node, self.name)]
                # Its supervisors' sessions went with its Asterisk.
                await tx.supervisions.drop_node(node)
                log.error("node %s lost (its lease expired): %s ended its %d open calls as "
                          "pbx_lost", node, self.name, len(calls))
        # After the commit: every node's boards drop the calls' cards and free their agents.
        for call_id in ended:
            self._hub.publish(CARDS_TOPIC, CallEnded(call_id))
        if lines and self._reopen_lines is not None:
            await self._reopen_lines(lines)
        return ended
