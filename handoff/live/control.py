"""The live-call controller: built once, it owns the live calls and their flows.

:class:`CallControl` is what the rest of the product holds (the dashboard, the AI API,
supervision, call-backs): its public methods are the commands on live calls. Behind it
each flow is a small object of its own module, and they reach each other through it:

- :mod:`~handoff.live.routing`: the registry of live calls and where ARI events go;
- :mod:`~handoff.live.lifecycle`: a call starts (answer, bridge, recording, AI) and ends;
- :mod:`~handoff.live.engines`: which assistant and engine a call gets (from the store);
- :mod:`~handoff.live.menu`: a number's DTMF menu before the AI;
- :mod:`~handoff.live.announce`: what the caller is told when a person joins;
- :mod:`~handoff.live.ai`: the AI leg, and what happens when it fails;
- :mod:`~handoff.live.offer`: a handoff offered, staged legs, timeouts, the fallback;
- :mod:`~handoff.live.queues`: a queue's card offered member by member (ring windows);
- :mod:`~handoff.live.move`: accept, the agent's leg, the move, back to the AI;
- :mod:`~handoff.live.lines`: an agent's open line, parked between calls;
- :mod:`~handoff.live.transfer`: an agent hands the caller to a colleague;
- :mod:`~handoff.live.reconcile`: after a restart, the ledger matched with Asterisk;
- :mod:`~handoff.live.presence`: wrap-up, and whether an agent's phone can ring;
- :mod:`~handoff.live.media`: waiting for a leg's audio, voice or playback;
- :mod:`~handoff.live.quality`: each leg's jitter, loss and round-trip time as it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from handoff.ari_api import AriApi
from handoff.calls import CallOutcome
from handoff.events import CALLS_TOPIC, CallChanged, EventHub
from handoff.live.ai import AiLegs
from handoff.live.announce import Announcements
from handoff.live.call import LiveCall
from handoff.live.engines import Engines
from handoff.live.errors import NodeUnanswered
from handoff.live.flow import Timing
from handoff.live.legs import Phones
from handoff.live.lifecycle import Lifecycle
from handoff.live.lines import Lines
from handoff.live.media import Media
from handoff.live.menu import Menus
from handoff.live.move import Moves
from handoff.live.node_requests import NodeRequests
from handoff.live.offer import Offers
from handoff.live.presence import Presence
from handoff.live.quality import LegQualities
from handoff.live.queues import Queues
from handoff.live.reconcile import Reconciler
from handoff.live.routing import Registry, Router
from handoff.live.transfer import Transfers
from handoff.live.voicemail import Voicemail
from handoff.live.xnode import NodeLegs
from handoff.outbound import Outbound
from handoff.store import Store
from handoff.store.errors import NotFound
from pbx.spool import SoundFolder, Spool

log = logging.getLogger(__name__)


class CallControl:
    def __init__(
        self,
        ari: AriApi,
        store: Store,
        hub: EventHub,
        engines: Engines,
        *,
        app: str = "switchboard",
        outbound: Outbound | None = None,
        recordings: Path | None = None,
        spool: Spool | None = None,
        timing: Timing | None = None,
        sounds: SoundFolder | None = None,
        open_lines: bool = True,
        call_limit: int = 0,
        on_refused: Callable[[str], None] | None = None,
        phones: Phones | None = None,
    ) -> None:
        self.ari = ari
        self.store = store
        self.hub = hub
        self.engines = engines
        self.app = app
        # The trunks calls out go through (the assistant's fallback number).
        self.outbound = outbound or Outbound(store)
        self.recordings = recordings
        self.spool = spool
        self.timing = timing or Timing()
        # Where the controller's own prompts (a number's menu) go for Asterisk to play.
        self.sounds = sounds
        # Calls held at once before the next caller is refused (0: no limit), and who
        # counts a caller refused (for the metrics), with why: "full" or "unallocated".
        self.call_limit = call_limit
        self.on_refused = on_refused
        # How every leg to a phone (a rung agent, an open line, a supervisor) is made.
        self.phones = phones or Phones()
        self.registry = Registry()
        self._tasks: set[asyncio.Task[None]] = set()
        self.media = Media(self)
        self.quality = LegQualities(self)
        self.lifecycle = Lifecycle(self)
        self.ai = AiLegs(self)
        self.menus = Menus(self)
        self.voicemail = Voicemail(self)
        self.announcements = Announcements(self)
        self.offers = Offers(self)
        self.queues = Queues(self)
        self.moves = Moves(self)
        # Browser-phone agents' lines, open for the shift (False: every Accept rings).
        self.lines = Lines(self, enabled=open_lines)
        self.transfers = Transfers(self)
        self.presence = Presence(self)
        self.reconciler = Reconciler(self)
        self.router = Router(self)
        self.leave_alone(self.lines.owned)
        # Handoffs across the nodes of a cluster (the caller here, the agent on another),
        # and the commands a person on another node's desk gives on a call held here.
        self.xnode = NodeLegs(self)
        self.router.on_stasis("xnode", self.xnode.arrived)
        self.requests = NodeRequests(hub, store.node or "", self.spawn, self.timing)
        self._serve_other_nodes()
        if store.node:
            self.spawn(self.xnode.listen(), "other nodes' requests")

    @property
    def calls(self) -> dict[str, LiveCall]:
        """The live calls, by call id."""
        return self.registry.by_id

    # ---- background work -------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Background work is tracked: it is cancelled on close and its errors are logged.
        Returned for work that something else can make pointless (an offer's timeout)."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def refused(self, why: str) -> None:
        if self.on_refused is not None:
            self.on_refused(why)

    async def close(self) -> None:
        await self.lines.shut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- commands ----------------------------------------------------------------------

    def live(self, call_id: str) -> LiveCall:
        live = self.calls.get(call_id)
        if live is None:
            raise NotFound("call", call_id)
        return live

    async def request_handoff(
        self, call_id: str, *, reason: str, summary: str, topic: str | None = None,
        priority: str = "normal", attempt: int = 1,
    ) -> int:
        """Open a handoff and offer it; the caller keeps the AI meanwhile."""
        return await self.offers.request(call_id, reason=reason, summary=summary,
                                         topic=topic, priority=priority, attempt=attempt)

    async def accept(self, handoff_id: int, agent_id: int) -> None:
        await self.moves.accept(handoff_id, agent_id)

    async def transfer(self, call_id: str, from_agent: int, to_agent: int, note: str) -> int:
        if (node := await self.xnode.elsewhere(call_id)) is not None:
            return int(await self.requests.ask(node, "transfer", {
                "call_id": call_id, "from_agent": from_agent, "to_agent": to_agent,
                "note": note}))
        return await self.transfers.start(call_id, from_agent, to_agent, note)

    async def transfer_to_queue(self, call_id: str, from_agent: int, queue_id: int,
                                note: str) -> int:
        """Hand the caller to a queue's members (QueueNotAvailable when none can come)."""
        if (node := await self.xnode.elsewhere(call_id)) is not None:
            return int(await self.requests.ask(node, "transfer", {
                "call_id": call_id, "from_agent": from_agent, "to_queue": queue_id,
                "note": note}))
        return await self.transfers.start(call_id, from_agent, None, note, to_queue=queue_id)

    async def return_to_ai(self, call_id: str) -> None:
        if (node := await self.xnode.elsewhere(call_id)) is not None:
            # Another node's call (an agent here on it): that node carries it out.
            await self.requests.ask(node, "return_to_ai", {"call_id": call_id})
            return
        await self.moves.return_to_ai(call_id)

    async def end_call(self, call_id: str, outcome: CallOutcome | None = None) -> None:
        if outcome is None and (node := await self.xnode.elsewhere(call_id)) is not None:
            await self.requests.ask(node, "end_call", {"call_id": call_id})
            return
        await self.lifecycle.end(call_id, outcome)

    def _serve_other_nodes(self) -> None:
        """What another node's desk may ask of this one: the same commands on a call held
        here (never relayed on: this node holds it or says why not), and an open line's
        end for an agent gone off duty there."""
        def call_of(args: dict[str, Any]) -> str:
            return str(args["call_id"])

        async def transfer(args: dict[str, Any]) -> int:
            to_agent, to_queue = args.get("to_agent"), args.get("to_queue")
            return await self.transfers.start(
                call_of(args), int(args["from_agent"]),
                None if to_agent is None else int(to_agent), str(args.get("note", "")),
                to_queue=None if to_queue is None else int(to_queue))

        async def close_line(args: dict[str, Any]) -> None:
            await self.lines.close(int(args["agent_id"]), str(args["sip_user"]))

        self.requests.handle("return_to_ai", lambda a: self.moves.return_to_ai(call_of(a)))
        self.requests.handle("end_call", lambda a: self.lifecycle.end(call_of(a)))
        self.requests.handle("transfer", transfer)
        self.requests.handle("close_line", close_line)

    async def settled(self, live: LiveCall) -> None:
        await self.moves.settled(live)

    async def phone_registered(self, sip_user: str) -> bool | None:
        # An agent whose open line dropped cannot be put through until their tab opens
        # it again: to the phone watch that is a phone that cannot ring (away after
        # its grace, as for an unregistered phone).
        if self.lines.down(sip_user):
            return False
        return await self.presence.phone_registered(sip_user)

    @property
    def open_lines(self) -> bool:
        return self.lines.enabled

    async def open_line(self, agent_id: int, sip_user: str, *, desk_phone: bool = False
                        ) -> str:
        """Call the agent's phone for their open line; returns its state (LineRefused
        when lines are turned off or the phone cannot be called)."""
        return (await self.lines.open(agent_id, sip_user, desk_phone=desk_phone)).state.value

    async def close_line(self, agent_id: int, sip_user: str) -> None:
        await self.lines.close(agent_id, sip_user)
        if not self.store.node:
            return
        async with self.store.transaction() as tx:
            held_on = (await tx.agents.get(agent_id)).line_node
        if held_on and held_on != self.store.node:
            # A desk phone's line held on another node (opened from a desk there, or
            # called again by a survivor): only that node's Asterisk can hang it up.
            try:
                await self.requests.ask(held_on, "close_line",
                                        {"agent_id": agent_id, "sip_user": sip_user})
            except NodeUnanswered as exc:
                # Off duty stands: no card reaches an agent off duty, and a lost node's
                # lines end with it (handoff.nodes).
                log.warning("agent=%s: the open line on %s was not hung up: %s",
                            agent_id, held_on, exc)

    def wrap_up(self, agent_id: int | None) -> None:
        self.presence.wrap_up(agent_id)

    def call_changed(self, call_id: str) -> None:
        """Something the agent's call panel or the supervisor board shows has changed
        (the call started, an agent connected or left, a transfer moved on)."""
        self.hub.publish(CALLS_TOPIC, CallChanged(call_id))

    # ---- reconciliation ----------------------------------------------------------------

    def leave_alone(
        self, owned: Callable[[], Iterable[str]],
        adopt: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`owned()` names channels and bridges that are not calls' but are in use;
        `adopt()`, run at the start of every reconciliation, lets their owner take up
        what it had before a restart or a lost event socket."""
        self.reconciler.leave_alone(owned, adopt)

    async def reconcile(self) -> None:
        await self.reconciler.reconcile()

    async def hang_up_taken_over(self) -> None:
        await self.reconciler.hang_up_taken_over()
