"""A supervisor on a live call: listen, whisper, barge, take over.

The supervisor's own phone (their PJSIP endpoint) is dialled by the controller and, once
answered, stays up while the supervisor changes mode:

- **listen**: a Snoop leg on the caller's channel (``spy=both``) hears the caller and
  whatever the caller hears (AI or agent); it shares a small *supervision bridge* with
  the supervisor's leg. Nobody on the call hears the supervisor.
- **whisper**: the Snoop leg sits on the agent's channel with ``whisper=out``: what the
  supervisor says is mixed into the agent's audio only, the caller hears nothing.
- **barge**: the supervisor's leg moves into the call bridge: a three-way conversation.
- **take over**: the supervisor's leg joins the call bridge, then the AI or agent leg
  leaves; in the ledger the supervisor becomes the call's agent through a handoff of
  reason ``supervisor`` (so history says who handled the call, and the controller
  treats the supervisor's leg like any agent's from then on).

Every leg and bridge created here carries an id that starts with the caller's channel
id, so the ARI client orders its events with the rest of the call's.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handoff.assistants import Moment
from handoff.calls import CallEvent, CallState
from handoff.events import CARDS_TOPIC, TAKEN_OVER, HandoffConnected, Withdrawn, assistant_topic
from handoff.handoffs import FailureReason, HandoffEvent, HandoffState
from handoff.live import CallControl, LiveCall, add_when_in_stasis, call_key
from handoff.live.xnode import agent_on
from handoff.store.errors import NotFound
from pbx.ari import AriError, AriNotFound

log = logging.getLogger(__name__)

SUPERVISOR_REASON = "supervisor"


class Mode(enum.StrEnum):
    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"
    TAKE_OVER = "take_over"


class SupervisionRefused(Exception):
    """The call is not in a state that allows this (whisper with nobody to whisper to)."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


class SupervisorUnreachable(SupervisionRefused):
    def __init__(self, why: str) -> None:
        super().__init__("phone_unreachable", f"your phone could not be reached: {why}")


@dataclass(frozen=True, slots=True)
class Supervisor:
    """Who supervises: enough of the agents row to dial them and name them in the audit."""

    agent_id: int
    login: str
    sip_user: str
    # Another node of the cluster that holds their open line (asked from there): they are
    # reached through it, on the node trunk, rather than at their phone.
    via: str = ""


@dataclass
class Session:
    call_id: str
    caller: str  # the call's caller channel: when it goes, the session goes
    supervisor: Supervisor
    leg: str
    bridge: str  # the supervision bridge: the supervisor's leg and the Snoop leg
    mode: Mode | None = None
    snoop: str | None = None
    target: str | None = None  # the leg the Snoop is on (the agent's, to whisper)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "supervisor_id": self.supervisor.agent_id,
                "mode": self.mode.value if self.mode else None}


@dataclass
class RemoteSession:
    """A supervisor here on a call another node holds: the session is that node's."""

    call_id: str
    supervisor_id: int
    node: str
    mode: Mode | None

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "supervisor_id": self.supervisor_id,
                "mode": self.mode.value if self.mode else None, "node": self.node}


class Supervision:
    def __init__(self, control: CallControl, *, ring_timeout_s: int = 30) -> None:
        self.control = control
        self.ari = control.ari
        self.store = control.store
        self.ring_timeout_s = ring_timeout_s
        self.sessions: dict[tuple[str, int], Session] = {}
        self._ringing: dict[str, asyncio.Future[None]] = {}
        self.ari.on("ChannelStateChange", self._on_state_change)
        self.ari.on("StasisEnd", self._on_leg_gone)
        self.ari.on("ChannelDestroyed", self._on_leg_gone)
        # A lost event socket must not cost a supervisor the call they are listening to;
        # after a restart, the sessions the last process had are gone with it.
        control.leave_alone(self.owned, self._forget_others)
        control.lines.on_parked(self._leg_parked)
        self._serve_other_nodes()

    def owned(self) -> set[str]:
        """The supervisors' legs, snoops and bridges, and legs still ringing."""
        ids = set(self._ringing)
        for session in self.sessions.values():
            ids |= {session.leg, session.bridge, *([session.snoop] if session.snoop else [])}
        return ids

    # ---- commands --------------------------------------------------------------------

    async def supervise(self, call_id: str, supervisor: Supervisor, mode: Mode
                        ) -> Session | RemoteSession:
        """Start supervising `call_id` in `mode`, or switch an existing session's mode.

        Raises NotFound (no such live call), SupervisionRefused, SupervisorUnreachable;
        NodeUnanswered when another node holds the call and did not answer.
        """
        node = await self.control.xnode.elsewhere(call_id)
        if node is None:
            return await self._supervise_here(call_id, supervisor, mode)
        # Another node's call: that node rings the supervisor's phone (at the edge, which
        # any node rings) and carries the mode out; its answer waits for their phone.
        # A line answered a moment ago is waited for (its first audio), as an Accept
        # waits: read as no line, node A would ring a phone busy with it.
        await self.control.lines.settled(supervisor.agent_id)
        line_here = self.control.lines.idle(supervisor.agent_id)
        done = await self.control.requests.ask(
            node, "supervise", {"call_id": call_id, "mode": mode.value,
                                "agent_id": supervisor.agent_id, "login": supervisor.login,
                                "sip_user": supervisor.sip_user,
                                "via": self.store.node if line_here else ""},
            ringing_s=self.ring_timeout_s + 2)
        return RemoteSession(call_id, supervisor.agent_id, node, Mode(done["mode"]))

    async def _supervise_here(self, call_id: str, supervisor: Supervisor, mode: Mode
                              ) -> Session:
        live = self._live(call_id)
        await self.control.settled(live)
        if mode is Mode.WHISPER and not (live.agent and live.connected):
            raise SupervisionRefused(
                "no_agent", "whisper needs an agent on the call; the AI has it now")
        if mode is Mode.TAKE_OVER and live.agent_id != supervisor.agent_id:
            async with self.store.transaction() as tx:
                busy = supervisor.agent_id in await tx.agents.busy_agent_ids()
            if busy:
                # Before their phone rings: taking a second caller while talking to a
                # first would leave one of them talking to nobody.
                raise SupervisionRefused("busy", "you are on another call; end it first")
        key = (call_id, supervisor.agent_id)
        session = self.sessions.get(key)
        if session is None:
            session = await self._dial_supervisor(live, supervisor)
            self.sessions[key] = session
        async with session.lock:
            if mode is Mode.TAKE_OVER:
                await self._take_over(live, session)
            else:
                await self._set_mode(live, session, mode)
        async with self.store.transaction() as tx:
            # Every node's board and panel read who supervises what from the store.
            if mode is Mode.TAKE_OVER:
                await tx.supervisions.let_go(call_id, supervisor.agent_id)
            else:
                await tx.supervisions.hold(call_id, supervisor.agent_id, mode.value,
                                           self.store.node)
            await tx.audit.record(supervisor.login, mode.value, f"call:{call_id}",
                                  {"leg": session.leg, "caller": live.caller_number,
                                   "agent_id": live.agent_id,
                                   **({"node": self.store.node} if self.store.node else {})})
        log.info("call=%s supervisor=%s %s via %s", call_id, supervisor.login, mode.value,
                 session.leg)
        self.control.call_changed(call_id)  # the board and the supervisor's panel show it
        return session

    async def stop(self, call_id: str, supervisor: Supervisor) -> None:
        session = self.sessions.get((call_id, supervisor.agent_id))
        if session is None and (node := await self.control.xnode.elsewhere(call_id)):
            await self.control.requests.ask(node, "stop_supervising", {
                "call_id": call_id, "agent_id": supervisor.agent_id,
                "login": supervisor.login, "sip_user": supervisor.sip_user})
            return
        if session is None:
            raise NotFound("supervision", f"{call_id}/{supervisor.agent_id}")
        await self._end(session, "stopped by the supervisor")

    def _serve_other_nodes(self) -> None:
        """A supervisor on another node's board, on a call held here: carried out here as
        if this node's board had asked (the audit names them, and this node)."""
        def asking(args: dict[str, Any]) -> Supervisor:
            return Supervisor(int(args["agent_id"]), str(args["login"]), str(args["sip_user"]),
                              via=str(args.get("via") or ""))

        async def supervise(args: dict[str, Any]) -> dict[str, Any]:
            session = await self._supervise_here(str(args["call_id"]), asking(args),
                                                 Mode(str(args["mode"])))
            return session.to_json()

        async def stop(args: dict[str, Any]) -> None:
            session = self.sessions.get((str(args["call_id"]), int(args["agent_id"])))
            if session is None:
                raise NotFound("supervision", f"{args['call_id']}/{args['agent_id']}")
            await self._end(session, "stopped by the supervisor")

        requests = self.control.requests
        requests.handle("supervise", supervise)
        requests.handle("stop_supervising", stop)
        # Unreachable is a refusal too (its error says which): rebuilt as the base.
        requests.refuses("supervision_refused", SupervisionRefused, lambda e: [e.error, e.reason])

    async def _forget_others(self) -> None:
        """This node's sessions in the store that it does not hold (a restart ended
        them, and reconciliation hangs up what is left of their legs): off the boards."""
        async with self.store.transaction() as tx:
            gone = await tx.supervisions.drop_node(self.store.node, keep=set(self.sessions))
        if gone:
            log.warning("%d supervision sessions of this node's last run forgotten", gone)

    def of_call(self, call_id: str) -> list[Session]:
        return [s for (cid, _), s in self.sessions.items() if cid == call_id]

    def of_supervisor(self, agent_id: int) -> list[Session]:
        return [s for (_, supervisor), s in self.sessions.items() if supervisor == agent_id]

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await self._end(session, "controller stopping")
        self.ari.off("ChannelStateChange", self._on_state_change)
        self.ari.off("StasisEnd", self._on_leg_gone)
        self.ari.off("ChannelDestroyed", self._on_leg_gone)

    # ---- the supervisor's phone ------------------------------------------------------

    async def _dial_supervisor(self, live: LiveCall, supervisor: Supervisor) -> Session:
        """Ring the supervisor's phone into their own supervision bridge; wait for answer.

        A supervisor on duty with an open line is not rung: their line moves into the
        supervision bridge (and goes back to its holding bridge when they leave).
        The call's lock is not held while it rings: the call goes on meanwhile.
        """
        bridge = live.new_leg_id("supbridge")
        line = self.control.lines.take(supervisor.agent_id)
        if line is not None:
            try:
                await self.ari.bridges.create(bridge_id=bridge, type="mixing")
                await self.control.lines.join(bridge, line)
            except AriError as exc:
                await self.control.lines.release(line)
                await self._destroy(bridge)
                raise SupervisorUnreachable(str(exc)) from exc
            return Session(live.call_id, live.caller, supervisor, line, bridge)
        leg = live.new_leg_id("supervisor")
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ringing[leg] = answered
        try:
            await self.ari.bridges.create(bridge_id=bridge, type="mixing")
            # Their open line on another node is reached through that node (their phone
            # is busy with it); anyone else at their phone, wherever it registered.
            endpoint = (agent_on(supervisor.via, supervisor.agent_id) if supervisor.via
                        else self.control.phones.dial(supervisor.sip_user))
            await self.ari.channels.create(
                endpoint, self.control.app,
                app_args=["supervisor", live.call_id], channel_id=leg, originator=live.caller,
            )
            await add_when_in_stasis(self.ari, bridge, leg)
            await self.ari.channels.dial(leg, caller=live.caller, timeout=self.ring_timeout_s)
            await asyncio.wait_for(answered, self.ring_timeout_s + 2)
        except (AriError, SupervisorUnreachable, TimeoutError) as exc:
            await self._hangup(leg)
            await self._destroy(bridge)
            why = exc.reason if isinstance(exc, SupervisionRefused) else (
                "no answer" if isinstance(exc, TimeoutError) else str(exc))
            raise SupervisorUnreachable(why) from exc
        finally:
            self._ringing.pop(leg, None)
        return Session(live.call_id, live.caller, supervisor, leg, bridge)

    # ---- modes -----------------------------------------------------------------------

    async def _set_mode(self, live: LiveCall, session: Session, mode: Mode) -> None:
        """Listen and whisper hear the call through a Snoop leg; barge joins the call.

        The new path is set up before the old one is torn down, so the supervisor does
        not lose the call's audio while switching.
        """
        old_snoop, session.snoop = session.snoop, None
        if mode is Mode.BARGE:
            await add_when_in_stasis(self.ari, live.bridge, session.leg)
        else:
            # The caller's channel hears everyone on the call; whispering needs the agent's.
            target = live.agent if mode is Mode.WHISPER else live.caller
            assert target is not None
            snoop = live.new_leg_id("snoop")
            await self.ari.channels.snoop(
                target, self.control.app, spy="both",
                whisper="out" if mode is Mode.WHISPER else "none",
                app_args=["snoop", live.call_id], snoop_id=snoop,
            )
            session.snoop, session.target = snoop, target
            # addChannel moves the supervisor's leg out of the call bridge if it barged.
            await add_when_in_stasis(self.ari, session.bridge, [snoop, session.leg])
        session.mode = mode
        if old_snoop:
            await self._hangup(old_snoop)

    async def _take_over(self, live: LiveCall, session: Session) -> None:
        """The supervisor's leg joins the call bridge, then the AI or agent leg leaves.

        Under the call's lock, like every change of who the caller talks to; the ledger
        records a handoff of reason ``supervisor`` accepted by the supervisor and
        connected at once, and the call's TAKE_OVER step.
        """
        supervisor = session.supervisor
        async with live.lock:
            if live.ending or live.closed:
                raise SupervisionRefused("call_not_live", "the call has ended")
            async with self.store.transaction() as tx:
                call = await tx.calls.get(live.call_id)
                pending = await tx.handoffs.get(live.handoff_id) if live.handoff_id else None
            if call.state not in (CallState.WITH_AI, CallState.HANDOFF_PENDING,
                                  CallState.WITH_AGENT):
                raise SupervisionRefused("call_not_live", f"the call is {call.state.value}")
            if pending is not None and pending.state not in (HandoffState.OFFERED,
                                                             HandoffState.CONNECTED):
                raise SupervisionRefused(
                    "agent_joining", "an agent is joining this call; try again in a moment")
            if getattr(live, "transfer", None) is not None:
                raise SupervisionRefused(
                    "agent_joining", "a transfer is under way; try again in a moment")
            if live.agent_id == supervisor.agent_id:
                raise SupervisionRefused("already_yours", "you already have this call")
            # Into the call bridge first: the caller hears the supervisor before the
            # previous party leaves, never a silence in between.
            await add_when_in_stasis(self.ari, live.bridge, session.leg)
            async with self.store.transaction() as tx:
                if pending is not None and pending.state is HandoffState.OFFERED:
                    await tx.handoffs.apply(pending.id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.CANCELLED)
                elif pending is not None:
                    await tx.handoffs.apply(pending.id, HandoffEvent.END)
                mine = await tx.handoffs.assign(
                    live.call_id, supervisor.agent_id, reason=SUPERVISOR_REASON,
                    summary="taken over by a supervisor",
                    attempt=(pending.attempt + 1) if pending else 1,
                    agent_channel_id=session.leg,
                )
                await tx.handoffs.apply(mine.id, HandoffEvent.AGENT_ANSWERED)
                await tx.calls.apply(live.call_id, CallEvent.TAKE_OVER,
                                     agent_channel_id=session.leg, ai_channel_id=None)
            if live.agent_id is not None and pending is not None \
                    and pending.state is HandoffState.CONNECTED:
                self.control.wrap_up(live.agent_id)  # the replaced agent's part is over
            # From here on the controller treats the supervisor's leg as the call's agent
            # leg; the legs hung up below are no longer the call's, so their end is
            # not taken for the agent vanishing.
            leaving = live.taken_over(session.leg, supervisor.agent_id, mine.id)
            for leg in leaving:
                # The agent's open line goes back to its holding bridge; others hang up.
                await self.control.lines.release(leg)
            # The card's staged lines too: nobody will accept it now.
            await self.control.lines.unstage(live.bridge)
        # The leg now belongs to the call: this session's Snoop and bridge go.
        self.sessions.pop((session.call_id, supervisor.agent_id), None)
        session.mode = Mode.TAKE_OVER
        if session.snoop:
            await self._hangup(session.snoop)
        await self._destroy(session.bridge)
        if pending is not None and pending.state is HandoffState.OFFERED:
            self.control.hub.publish(CARDS_TOPIC, Withdrawn(pending.id, TAKEN_OVER))
        self.control.hub.publish(assistant_topic(live.assistant),
                                 HandoffConnected(live.call_id, str(supervisor.agent_id)))
        self.control.announcements.say(live, Moment.TAKEOVER)

    # ---- ARI events --------------------------------------------------------------------

    async def _on_state_change(self, event: Mapping[str, Any]) -> None:
        channel = event["channel"]
        waiting = self._ringing.get(str(channel["id"]))
        if waiting is not None and channel.get("state") == "Up" and not waiting.done():
            waiting.set_result(None)

    async def _on_leg_gone(self, event: Mapping[str, Any]) -> None:
        channel_id = str(event["channel"]["id"])
        waiting = self._ringing.get(channel_id)
        if waiting is not None and not waiting.done():
            waiting.set_exception(SupervisorUnreachable(f"cause {event.get('cause', '?')}"))
            return
        key = call_key(event)
        for session in list(self.sessions.values()):
            if session.caller != key:
                continue
            if channel_id == session.leg:
                await self._end(session, "the supervisor hung up")
            elif channel_id == session.caller:
                await self._end(session, "the call ended")
            elif channel_id == session.snoop:
                # The snooped agent left the call (returned to the AI, transferred).
                await self._end(session, "the supervised leg left")

    async def _leg_parked(self, leg: str) -> None:
        """An agent's open line left the call for its holding bridge (back to the AI, a
        transfer): it does not hang up, so its Snoop does not end by itself; a whisper
        to that agent is over."""
        for session in list(self.sessions.values()):
            if session.target == leg and session.snoop:
                await self._end(session, "the supervised leg left")

    async def _end(self, session: Session, why: str) -> None:
        if self.sessions.pop((session.call_id, session.supervisor.agent_id), None) is None:
            return
        if session.snoop:
            await self._hangup(session.snoop)
        # The supervisor's open line goes back to its holding bridge; a rung leg hangs up.
        try:
            await self.control.lines.release(session.leg)
        except AriError as exc:
            log.warning("could not let go of %s: %s", session.leg, exc)
        await self._destroy(session.bridge)
        try:
            async with self.store.transaction() as tx:
                await tx.supervisions.let_go(session.call_id, session.supervisor.agent_id)
                await tx.audit.record(session.supervisor.login, "supervision_ended",
                                      f"call:{session.call_id}", {"why": why})
        except Exception:
            # The legs are gone either way; an audit line that could not be written is
            # said loudly, never dropped without a word.
            log.exception("call=%s supervisor=%s: the end of supervision (%s) could not be "
                          "written to the audit log", session.call_id,
                          session.supervisor.login, why)
        log.info("call=%s supervisor=%s: supervision ended (%s)", session.call_id,
                 session.supervisor.login, why)
        self.control.call_changed(session.call_id)

    # ---- helpers -------------------------------------------------------------------------

    def _live(self, call_id: str) -> LiveCall:
        live = self.control.calls.get(call_id)
        if live is None or live.ending:
            raise NotFound("call", call_id)
        return live

    async def _hangup(self, channel_id: str) -> None:
        try:
            await self.ari.channels.hangup(channel_id)
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("could not hang up %s: %s", channel_id, exc)

    async def _destroy(self, bridge_id: str) -> None:
        try:
            await self.ari.bridges.destroy(bridge_id)
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("could not destroy bridge %s: %s", bridge_id, exc)
