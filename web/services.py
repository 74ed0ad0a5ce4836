"""What the composition root (web.app) builds once and every route reaches through
``app[SERVICES]``: the store, the event hub, telephony, and the :class:`Controller`, which
holds the live objects once Asterisk runs and answers "starting" (503) before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.callback import Callbacks
from handoff.events import EventHub
from handoff.live import CallControl
from handoff.nodes import NodeLease
from handoff.receptionist import Receptionist
from handoff.settings import Settings
from handoff.shared_events import SharedEvents
from handoff.store import Store
from handoff.supervision import Supervision
from pbx.ami import AmiClient
from pbx.ari import AriClient
from web.assistants import seat_builtin
from web.sip_blocks import SipBlocker
from web.startup import Startup
from web.telephony import Telephony, sync_directory
from web.trunk_watch import TrunkWatch

log = logging.getLogger(__name__)

@dataclass
class Controller:
    """Filled in once Asterisk runs; the HTTP routes reach the live objects through it."""

    ari: AriClient | None = None
    # AMI, for what ARI does not give: the PBX's security events.
    ami: AmiClient | None = None
    control: CallControl | None = None
    receptionist: Receptionist | None = None
    supervision: Supervision | None = None
    callbacks: Callbacks | None = None
    # Blocks SIP scanners on the AMI security events (web.sip_blocks).
    blocker: SipBlocker | None = None
    trunks: TrunkWatch | None = None
    # A node of a cluster (cluster.node): browsers register to one node or another,
    # desk phones to the edge.
    cluster_node: bool = False
    # Whether a SIP user's phone is reached through the cluster's edge (its state, as
    # this node's Asterisk reads it, is the edge's: web.telephony.through_edge).
    through_edge: Callable[[str], bool] = lambda sip_user: False
    # desk.open_line, for the tabs (the controller refuses lines too when it is off).
    open_lines_setting: bool = True

    # The AI control API's CallCommands, delegated to the call control once it exists.
    async def request_handoff(
        self, call_id: str, *, reason: str, summary: str, topic: str | None = None,
        priority: str = "normal",
    ) -> int:
        return await self._control().request_handoff(
            call_id, reason=reason, summary=summary, topic=topic, priority=priority
        )

    async def end_call(self, call_id: str) -> None:
        await self._control().end_call(call_id)

    # The dashboard's Commands.
    async def accept(self, handoff_id: int, agent_id: int) -> None:
        await self._control().accept(handoff_id, agent_id)

    async def return_to_ai(self, call_id: str) -> None:
        await self._control().return_to_ai(call_id)

    async def transfer(self, call_id: str, from_agent: int, to_agent: int, note: str) -> int:
        return await self._control().transfer(call_id, from_agent, to_agent, note)

    async def transfer_to_queue(self, call_id: str, from_agent: int, queue_id: int,
                                note: str) -> int:
        return await self._control().transfer_to_queue(call_id, from_agent, queue_id, note)

    async def phone_registered(self, sip_user: str) -> bool | None:
        # While the controller starts nobody can tell: going on duty is not held up.
        registered = None if self.control is None else await self.control.phone_registered(
            sip_user)
        # On a cluster's node, a browser phone unknown to this node's Asterisk may be
        # registered to another node's, which this one cannot ask (each node's ARI is its
        # own): not a definite "unregistered", so nobody is set away or kept off duty on
        # it. A desk phone registers to the edge, which every node asks alike: its
        # "unregistered" is definite, and no node's loss makes it so.
        if registered is False and self.cluster_node and not self.through_edge(sip_user):
            return None
        return registered

    async def hang_up_taken_over(self) -> None:
        # Before the controller runs nothing is ours yet: its reconciliation finds
        # those calls ended in the ledger and removes their legs as leftovers.
        if self.control is not None:
            await self.control.hang_up_taken_over()

    async def reopen_lines(self, lines: list[tuple[int, str]]) -> None:
        """A lost node's desk phones' open lines, called again from this node."""
        if self.control is None or not self.open_lines_setting:
            # Still starting, or lines off here: Accept rings those phones.
            log.warning("open lines of %s not called again: no controller or lines off",
                        [agent_id for agent_id, _ in lines])
            return
        for agent_id, sip_user in lines:
            self.control.lines.reopen(agent_id, sip_user)

    @property
    def open_lines(self) -> bool:
        return self.open_lines_setting

    async def open_line(self, agent_id: int, sip_user: str, *, desk_phone: bool = False
                        ) -> str:
        # A phone at the cluster's edge is called at its address of record there
        # (handoff.live.legs.Phones), not at the contact this node's qualify found: a
        # tab asking just after it registered is called at once.
        return await self._control().open_line(agent_id, sip_user, desk_phone=desk_phone)

    async def close_line(self, agent_id: int, sip_user: str) -> None:
        if self.control is not None:
            await self.control.close_line(agent_id, sip_user)

    def _control(self) -> CallControl:
        if self.control is None:
            raise web.HTTPServiceUnavailable(reason="the call controller is starting")
        return self.control


@dataclass
class Services:
    settings: Settings
    db: AsyncEngine
    store: Store
    hub: EventHub = field(default_factory=EventHub)
    telephony: Telephony = field(default_factory=Telephony)
    controller: Controller = field(default_factory=Controller)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    demo_credentials: dict[str, str] = field(default_factory=dict)
    # The events shared with the other nodes on the same PostgreSQL; None on SQLite.
    shared_events: SharedEvents | None = None
    # This node's lease, on a node of a cluster (cluster.node); None on a single box.
    lease: NodeLease | None = None
    startup: Startup = field(default_factory=Startup)
    # The admin page's changes and the periodic check apply one at a time: two at once
    # would each give the receptionist a token and store only one of them.
    directory_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def directory_changed(self) -> bool:
        """People or assistants changed in the store: the PBX renders its endpoints and
        numbers again (reloading, not restarting: calls go on) and the built-in
        receptionist answers for the assistants now on it. True if anything changed."""
        pbx = self.telephony.pbx
        if pbx is None:
            raise RuntimeError("the PBX is not running")
        async with self.directory_lock:
            reloaded = await sync_directory(self.store, pbx, self.telephony.fixed_trunks)
            receptionist = self.controller.receptionist
            seated = receptionist is not None and await seat_builtin(self.store, receptionist)
        return reloaded or seated


SERVICES = web.AppKey("services", Services)
