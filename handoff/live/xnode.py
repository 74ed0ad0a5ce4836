"""A handoff across nodes: the caller on node A, the agent reachable on node B (their
phone registered to B's Asterisk, or their open line held there), through a SIP leg
between the two nodes' Asterisks.

Only A's controller can move A's caller (each node's ARI listens on its own loopback),
and only B's can reach the agent's phone. So the card is accepted on B's desk as any
other: the conditional UPDATE in the shared store decides who wins, whatever node each
agent is on. B then tells A through the shared events (:class:`NodeAccepted`, a
PostgreSQL NOTIFY that A's controller listens for; the accept is committed by then, and
no node has to know another's HTTP address or credentials), and A calls B on its node
trunk with the handoff's id as the number. On A that node leg is the agent's leg: it
rings in the call bridge, which is recorded there whole, and its answer and first audio
complete the move as a phone's would; return to AI and the caller's end hang it up as
they hang up any agent leg. The caller's own dialog is never touched.

On B the node leg enters the app as ``xnode <handoff id>``: it is bridged with the
agent's open line (answered at once: no SIP to the agent's phone) or with a leg that
rings the agent's phone (answered when the phone answers). When either side goes, the
other is let go: the line back to its holding bridge, a rung leg hung up, the node leg
hung up with a cause A reads as it reads a phone's (RFC 3326 Reason in the BYE): normal
clearing when the agent put the phone down (the call ends as the agent's), a failure
when the agent's leg vanished (the caller goes back to the AI and is offered again).

A command a person gives on B's desk or board for a call on A (return to AI, end the
call, transfer, supervision) goes to A the same way, and A's answer comes back
(handoff.live.node_requests); its outcome is recorded by A, on the call's own row. A
transfer's card won on B is A's to ring as any other card won there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from handoff.calls import CallState
from handoff.events import CARDS_TOPIC, NODES_TOPIC, EventType, NodeAccepted, Taken
from handoff.handoffs import FailureReason, HandoffEvent, HandoffState
from handoff.live.errors import CallStateConflict
from handoff.live.flow import Flow
from handoff.live.legs import SEP, add_when_in_stasis, destroy, hang_up
from handoff.live.routing import phone_hung_up
from handoff.store.errors import NotFound
from handoff.store.models import Agent
from pbx.ari import AriError
from pbx.ari.resources import HangupReason
from pbx.asterisk_config import NodePeer

if TYPE_CHECKING:
    from handoff.live.control import CallControl

log = logging.getLogger(__name__)

# What a node leg's end tells the caller's node, as the Q.850 cause of its BYE or of
# its refusal: the agent's phone refused or did not answer (as A's own phones would),
# anything else a failure.
_UNANSWERED: dict[int, HangupReason] = {17: "busy", 18: "no_answer", 19: "no_answer",
                                        21: "rejected"}
_BEING_ACCEPTED = frozenset({HandoffState.ACCEPTED, HandoffState.CONNECTING})


def peer_endpoint(node: str) -> str:
    """The PJSIP endpoint of the trunk to ``node`` (pbx.asterisk_config.NodePeer)."""
    return NodePeer(node, "127.0.0.1").endpoint


# A node leg's number is a handoff's id, or, starting with this (ids have no leading
# zero), an agent's: someone reached on the node that holds their open line (a
# supervisor, or an agent who took a card on another node's desk).
AGENT_NUMBER = "0"


def reach_through(node: str, agent_id: int) -> str:
    """The agent through ``node``, as an agent leg dials it (Phones.dial): their open
    line there, or else their phone, rung by that node."""
    return f"{AGENT_NUMBER}{agent_id}@{peer_endpoint(node)}"


def agent_endpoint(agent: Agent, node: str | None) -> str:
    """What a leg to ``agent`` dials from ``node`` (Phones.dial): their phone; or, when
    another node of the cluster holds their desk phone's open line (the phone is busy
    with it), that node, which bridges the leg with the line."""
    if node and agent.line_node and agent.line_node != node:
        return reach_through(agent.line_node, agent.id)
    return agent.sip_user


def agent_on(node: str, agent_id: int) -> str:
    """The endpoint that reaches an agent through ``node`` (a channel's endpoint)."""
    return f"PJSIP/{reach_through(node, agent_id)}"


@dataclass
class NodeLeg:
    """On the agent's node: a node leg and what it is bridged with."""

    handoff_id: int
    agent_id: int
    leg: str  # from the caller's node
    bridge: str
    agent: str = ""  # the agent's open line, or the leg that rings their phone
    line: bool = False
    answered: bool = False
    hung_up_by_phone: bool = False
    cause: int = 0  # the agent's leg's, from its hang-up request


class NodeLegs(Flow):
    def __init__(self, ctl: CallControl) -> None:
        super().__init__(ctl)
        self._legs: dict[str, NodeLeg] = {}  # by the node leg's id
        for kind, handler in (("ChannelStateChange", self._on_state_change),
                              ("ChannelHangupRequest", self._on_hangup_request),
                              ("StasisEnd", self._on_leg_gone),
                              ("ChannelDestroyed", self._on_leg_gone)):
            ctl.ari.on(kind, handler)
        ctl.leave_alone(self.owned)

    @property
    def node(self) -> str:
        return self.store.node or ""

    def owned(self) -> set[str]:
        """The node legs held here, their bridges and rung legs: not leftovers."""
        return {i for n in self._legs.values() for i in (n.leg, n.bridge, n.agent) if i}

    # ---- the agent's node: the card accepted here ------------------------------------------

    async def accept(self, handoff_id: int, agent_id: int) -> None:
        """Accept a card whose call is not live here. Another node's call: the agent
        wins it here (one conditional UPDATE, as on any node) and that node is told to
        call this one for them. Anything else: the store says why (taken, withdrawn), or
        the call is no longer live; the accept is undone."""
        async with self.store.transaction() as tx:
            handoff = await tx.handoffs.accept(handoff_id, agent_id)
            call = await tx.calls.get(handoff.call_id)
            if not self.node or not call.node or call.node == self.node \
                    or call.state is CallState.ENDED:
                raise CallStateConflict(call.id, CallState.ENDED, "the call is no longer live")
            agent = await tx.agents.get(agent_id)
        # Through this node if the agent is reachable here (their line, their phone at
        # the edge, which any node rings, or registered to this Asterisk); else their
        # phone may be on the call's own node.
        here = self.ctl.lines.of(agent_id) is not None \
            or self.ctl.phones.at_edge(agent.sip_user) \
            or await self.ctl.presence.phone_registered(agent.sip_user) is True
        via = self.node if here else call.node
        self.hub.publish(CARDS_TOPIC, Taken(handoff_id, agent_id))
        self.hub.publish(NODES_TOPIC, NodeAccepted(call.node, handoff_id, agent_id, via))
        log.info("call=%s (node %s): agent %s accepted on node %s; reached via %s",
                 call.id, call.node, agent_id, self.node, via)

    async def elsewhere(self, call_id: str) -> str | None:
        """The other node that holds ``call_id`` open, if one does (None: the call is
        this node's, ended, or unknown, and the command's own refusal stands)."""
        if not self.node or call_id in self.ctl.calls:
            return None
        try:
            async with self.store.transaction() as tx:
                call = await tx.calls.get(call_id)
        except NotFound:
            return None
        if not call.node or call.node == self.node or call.state is CallState.ENDED:
            return None
        return call.node

    # ---- the caller's node: what another node asks ----------------------------------------

    async def listen(self) -> None:
        """Carry out what other nodes ask of this one, for as long as the controller runs."""
        async with self.hub.subscribe(NODES_TOPIC) as requests:
            while True:
                event = await requests.get()
                if event.get("type") == EventType.RESYNC:
                    self.ctl.spawn(self._missed(), "node requests missed")
                    continue
                if event.get("node") != self.node:
                    continue
                if event.get("type") == EventType.NODE_ACCEPTED:
                    self.ctl.spawn(self._call_agent(int(event["handoff_id"]),
                                                    int(event["agent_id"]), str(event["via"])),
                                   f"node leg handoff={event['handoff_id']}")
                elif event.get("type") in (EventType.NODE_REQUEST, EventType.NODE_REPLY):
                    self.ctl.requests.heard(event)

    async def _missed(self) -> None:
        """This node's link to the others was down: a card of a call here may have been
        won on another node meanwhile, and the word that this node should call it lost.
        Its agent would stay busy and its caller wait for nobody: the attempt fails
        (the agent is free again) and the call is offered again."""
        for live in list(self.ctl.calls.values()):
            async with live.lock:
                handoff_id = live.handoff_id
                if handoff_id is None or live.agent is not None or live.ending:
                    continue
                async with self.store.transaction() as tx:
                    if (await tx.handoffs.get(handoff_id)).state is not HandoffState.ACCEPTED:
                        continue
                    await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.AGENT_LEG_FAILED)
            log.warning("call=%s: handoff %s was accepted on another node while this one "
                        "was not listening; offered again", live.call_id, handoff_id)
            self.ctl.spawn(self.ctl.offers.reoffer(live, handoff_id), f"reoffer {handoff_id}")
        for live in list(self.ctl.calls.values()):
            # A transfer's card won meanwhile, as a card: the first agent keeps the caller
            # (as when the colleague's phone does not answer), the colleague is free.
            async with live.lock:
                transfer = live.transfer
                if transfer is None or transfer.leg or live.ending:
                    continue
                async with self.store.transaction() as tx:
                    handoff = await tx.handoffs.get(transfer.handoff_id)
                    if handoff.state is not HandoffState.ACCEPTED:
                        continue
                    await tx.handoffs.apply(handoff.id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.AGENT_LEG_FAILED)
                live.transfer = None
            log.warning("call=%s: transfer %s was accepted on another node while this one "
                        "was not listening; the first agent keeps the caller", live.call_id,
                        handoff.id)
            self.ctl.call_changed(live.call_id)

    async def _call_agent(self, handoff_id: int, agent_id: int, via: str) -> None:
        """The card of a call here was won on node ``via``: the agent's leg rings as on
        an accept here, through that node (or, reachable nowhere else, their phone)."""
        moving = next((c for c in self.ctl.calls.values()
                       if c.transfer is not None and c.transfer.handoff_id == handoff_id), None)
        if moving is not None:
            # A colleague won a transfer's card there: their leg rings as the transfer's.
            await self.ctl.transfers.won_elsewhere(moving, handoff_id, agent_id,
                                                   await self._endpoint(handoff_id, agent_id, via))
            return
        live = next((c for c in self.ctl.calls.values() if c.handoff_id == handoff_id), None)
        if live is None:
            return  # the call ended meanwhile: its end closed the handoff
        endpoint = await self._endpoint(handoff_id, agent_id, via)
        async with live.lock:
            if live.ending or live.agent is not None or live.handoff_id != handoff_id:
                return
            async with self.store.transaction() as tx:
                if (await tx.handoffs.get(handoff_id)).state is not HandoffState.ACCEPTED:
                    return  # failed meanwhile (this node missed the word: _missed)
            try:
                leg = await self.ctl.moves.create_agent_leg(live, endpoint)
                await self.ctl.moves.dial_agent(live, leg, agent_id)
            except AriError as exc:
                log.warning("call=%s: the node leg to %s for agent %s failed: %s",
                            live.call_id, via, agent_id, exc)
                async with self.store.transaction() as tx:
                    await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.AGENT_LEG_FAILED)
                self.ctl.spawn(self.ctl.offers.reoffer(live, handoff_id),
                               f"reoffer {handoff_id}")
                return
            live.agent_ringing(leg, agent_id)
            async with self.store.transaction() as tx:
                await tx.handoffs.apply(handoff_id, HandoffEvent.DIAL_AGENT,
                                        agent_channel_id=leg)
                await tx.calls.set_legs(live.call_id, agent_channel_id=leg)
            await self.ctl.offers.unstage(live)

    async def _endpoint(self, handoff_id: int, agent_id: int, via: str) -> str:
        """What this node dials for an agent who won ``handoff_id`` on node ``via``: that
        node, on its trunk (the number is the handoff), or, reachable nowhere else,
        their phone."""
        if via != self.node:
            return f"{handoff_id}@{peer_endpoint(via)}"
        async with self.store.transaction() as tx:
            return (await tx.agents.get(agent_id)).sip_user

    # ---- the agent's node: the node leg arrives ---------------------------------------------

    async def arrived(self, channel: Mapping[str, Any], args: list[str]) -> None:
        """``xnode <handoff id>``: the caller's node calls for the agent who won it here;
        ``xnode 0<agent id>``: for a supervisor whose open line is here."""
        leg = str(channel["id"])
        target = await self._target(args)
        if target is None:
            # A stale or unknown handoff (the caller gone, the card failed meanwhile):
            # nobody's phone rings for it.
            log.warning("node leg %s for %s: no handoff being accepted", leg, args)
            await hang_up(self.ari, leg, "unallocated")
            return
        handoff_id, agent = target
        node = NodeLeg(handoff_id, agent.id, leg, f"{leg}{SEP}bridge")
        self._legs[leg] = node
        try:
            # Media through B's own RTP stack (not native_rtp between the node leg and
            # the phone): relayed packets kept the phone's sequence numbers, and node A
            # lost what followed such a jump (README, recording): the caller heard the
            # agent's first frame and then silence, in about half the calls.
            await self.ari.bridges.create(bridge_id=node.bridge, type=("mixing", "proxy_media"))
            await self.ari.bridges.add_channel(node.bridge, leg)
            line = self.ctl.lines.take(agent.id)
            if line is not None:
                # One addChannel: the line leaves its holding bridge (or a card's call,
                # muted there) for this one.
                node.agent, node.line = line, True
                await self.ctl.lines.join(node.bridge, line)
                await self._answer(node)
            else:
                # The caller's node hears it ring (180) while the agent's phone does.
                node.agent = f"{leg}{SEP}agent"
                await self.ari.channels.ring(leg)
                await self.ari.channels.create(
                    self.ctl.phones.dial(agent.sip_user), self.ctl.app, app_args=["xnode-agent"],
                    channel_id=node.agent, originator=leg)
                await add_when_in_stasis(self.ari, node.bridge, node.agent)
                await self.ari.channels.dial(node.agent, caller=leg,
                                             timeout=self.timing.ring_timeout_s)
        except AriError as exc:
            log.warning("handoff=%s: node leg %s could not reach agent %s: %s",
                        handoff_id, leg, agent.id, exc)
            if node.line:
                self.ctl.lines.put_back(node.agent)
            await self._let_go(node, "failure")
            return
        log.info("handoff=%s: node leg %s to agent %s via %s", handoff_id, leg, agent.id,
                 "their open line" if node.line else "their phone")

    async def _target(self, args: list[str]) -> tuple[int, Agent] | None:
        """Whom a node leg is for: the handoff being accepted (0: a supervisor's leg)
        and the agent; None for a handoff no longer being accepted, or nobody."""
        number = args[0] if args else ""
        try:
            async with self.store.transaction() as tx:
                if number.startswith(AGENT_NUMBER):
                    return 0, await tx.agents.get(int(number))
                handoff = await tx.handoffs.get(int(number))
                if handoff.state not in _BEING_ACCEPTED:
                    return None
                return handoff.id, await tx.agents.get(handoff.accepted_by or 0)
        except (ValueError, NotFound):
            return None

    async def _answer(self, node: NodeLeg) -> None:
        node.answered = True
        await self.ari.channels.answer(node.leg)

    async def _let_go(self, node: NodeLeg, reason: HangupReason | None) -> None:
        """One side went: the other is let go (``reason``: the node leg's cause; None,
        the node leg went itself)."""
        if self._legs.pop(node.leg, None) is None:
            return
        if node.agent:
            if node.line:
                # Back to its holding bridge, for the agent's next call.
                await self.ctl.lines.release(node.agent)
            else:
                await hang_up(self.ari, node.agent)
        if reason is not None:
            await hang_up(self.ari, node.leg, reason)
        await destroy(self.ari, node.bridge)

    # ---- ARI events -----------------------------------------------------------------------

    def _by_agent(self, channel_id: str) -> NodeLeg | None:
        return next((n for n in self._legs.values() if n.agent == channel_id), None)

    async def _on_state_change(self, event: Mapping[str, Any]) -> None:
        node = self._by_agent(str(event["channel"]["id"]))
        if node is not None and not node.line and not node.answered \
                and event["channel"].get("state") == "Up":
            await self._answer(node)

    async def _on_hangup_request(self, event: Mapping[str, Any]) -> None:
        node = self._by_agent(str(event["channel"]["id"]))
        if node is None:
            return
        node.cause = int(event.get("cause", node.cause))
        if phone_hung_up(event):
            node.hung_up_by_phone = True
            line = self.ctl.lines.of(node.agent_id)
            if node.line and line is not None and line.leg == node.agent and line.desk_phone:
                # A desk phone's handset put down on its line: the line is called
                # again once gone, as after a call of this node's (handoff.live.lines).
                line.reopen = True

    async def _on_leg_gone(self, event: Mapping[str, Any]) -> None:
        channel_id = str(event["channel"]["id"])
        node = self._legs.get(channel_id)
        if node is not None:
            await self._let_go(node, None)
            return
        node = self._by_agent(channel_id)
        if node is None:
            return
        node.agent, line = "", node.line
        if not node.answered:
            cause = int(event.get("cause", node.cause))
            await self._let_go(node, _UNANSWERED.get(cause, "failure"))
        elif node.hung_up_by_phone:
            await self._let_go(node, "normal")
        else:
            # The agent's browser or network went: the caller's node gives the caller
            # back to the AI, as for a leg of its own that vanished.
            await self._let_go(node, "failure")
        if line:
            log.info("handoff=%s: the agent's line ended on the node leg", node.handoff_id)
