"""Call a caller back: the agent's phone first, then the caller over a trunk.

The agent's phone rings first, because the agent just clicked "Call back" and is waiting
for it; only once they pick up is the caller dialled, and the agent hears ringback
meanwhile. An agent with an idle open line (handoff.live.lines) is not rung: the line
moves into the call-back's bridge, the caller is dialled at once, and the line goes back
to its holding bridge when the call-back ends. Dialling the caller first would let them
answer into silence (or into a phone still ringing on a desk), which is the one thing a
callback must not do.

The number is checked to be a plain number before it goes anywhere near a dial string:
``PJSIP/<number>@<trunk>`` with anything else in it (``&``, ``/``, ``@``) would let a
crafted "number" dial a second destination or another trunk (toll fraud). Which trunk,
if any, may carry it is asked before the agent's phone rings (handoff.outbound): a
number no trunk allows is refused with the reason, and nothing is dialled at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handoff.ari_api import AriApi
from handoff.calls import CallDirection, CallEvent, CallOutcome, CallState
from handoff.events import CALLS_TOPIC, CallChanged, EventHub
from handoff.handoffs import FailureReason, HandoffEvent
from handoff.live.legs import Phones, add_when_in_stasis, bridge_of, owner_of, role_id
from handoff.live.lines import Lines
from handoff.logs import mask_number
from handoff.outbound import Outbound
from handoff.recordings import discard_recording, keep_recording
from handoff.states import StateMachine
from handoff.store import Store
from pbx.ari import AriError, AriNotFound
from pbx.spool import Spool

log = logging.getLogger(__name__)

# E.164 at most 15 digits, an optional leading +; short internal numbers are fine too.
_NUMBER = re.compile(r"^\+?[0-9]{3,15}$")
PREFIX = "cb-"
# The reason on a call-back's handoff row (history shows who called back).
CALLBACK_REASON = "call_back"


class BadNumber(ValueError):
    pass


class CallbackState(enum.StrEnum):
    RINGING_AGENT = "ringing_agent"  # the agent's phone rings; nobody else is dialled
    RINGING_CALLER = "ringing_caller"  # the agent is on the line, hearing ringback
    CONNECTED = "connected"  # the person called answered: they talk
    ENDED = "ended"


class CallbackEvent(enum.StrEnum):
    AGENT_ANSWERED = "agent_answered"
    CALLER_ANSWERED = "caller_answered"
    END = "end"  # either side hung up, a leg could not be dialled, or the agent ended it
    RESUME = "resume"  # a restarted controller finds the call-back connected in the ledger


CALLBACK: StateMachine[CallbackState, CallbackEvent] = StateMachine(
    "callback", CallbackState.RINGING_AGENT, {
        (CallbackState.RINGING_AGENT, CallbackEvent.AGENT_ANSWERED): CallbackState.RINGING_CALLER,
        (CallbackState.RINGING_CALLER, CallbackEvent.CALLER_ANSWERED): CallbackState.CONNECTED,
        # The ledger is written before the state moves: the call-back may have ended
        # meanwhile (the person hung up as they answered). Late news changes nothing.
        (CallbackState.ENDED, CallbackEvent.CALLER_ANSWERED): CallbackState.ENDED,
        **{(state, CallbackEvent.END): CallbackState.ENDED
           for state in (CallbackState.RINGING_AGENT, CallbackState.RINGING_CALLER,
                         CallbackState.CONNECTED)},
        (CallbackState.RINGING_AGENT, CallbackEvent.RESUME): CallbackState.CONNECTED,
    },
)


def check_number(number: str) -> str:
    """The number as it may be dialled, or BadNumber with a reason a person can act on."""
    cleaned = re.sub(r"[\s().-]", "", number)
    if not _NUMBER.fullmatch(cleaned):
        raise BadNumber(f"{number!r} is not a phone number (digits, an optional leading +)")
    return cleaned


@dataclass
class Callback:
    key: str
    number: str
    agent_id: int
    agent_leg: str
    caller_leg: str
    bridge: str
    # The trunk the number goes out through (handoff.outbound); chosen before anything
    # rings. Empty for a call-back adopted after a restart: it is past dialling.
    trunk: str = ""
    # The agent's leg is their open line (moved in, let go of at the end, never hung up).
    line: bool = False
    state: CallbackState = CallbackState.RINGING_AGENT
    # The ledger: a call-back is an outbound call, with a handoff row that says which
    # agent had it (history, visibility and "busy" all read handoffs).
    call_id: str = ""
    handoff_id: int = 0
    agent_answered: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.key, "number": self.number, "state": self.state.value}

    def move(self, event: CallbackEvent) -> None:
        """The only way the state changes: checked, and logged against the call."""
        self.state = CALLBACK.transition(self.state, event, call_id=self.call_id,
                                         ref=f"callback={self.key}")


class Callbacks:
    def __init__(
        self, ari: AriApi, store: Store, *, outbound: Outbound, app: str = "switchboard",
        ring_timeout_s: int = 30, recordings: Path | None = None,
        spool: Spool | None = None, events: EventHub | None = None,
        after_call: Callable[[int], None] | None = None,
        phones: Phones | None = None, lines: Lines | None = None,
    ) -> None:
        self.ari = ari
        # The agents' open lines (None: every call-back rings the agent's phone).
        self.lines = lines
        self.store = store
        # The supervisor board lists call-backs with the other live calls.
        self.events = events
        # Called with the agent's id once a call-back they took part in ends: the
        # product starts their wrap-up, as after any call (CallControl.wrap_up).
        self.after_call = after_call
        # Call-backs are recorded like every call (see CallControl: the same folder).
        self.recordings = recordings
        self.spool = spool
        self.outbound = outbound
        self.app = app
        self.ring_timeout_s = ring_timeout_s
        self.phones = phones or Phones()  # how the agent's phone is rung
        self.active: dict[str, Callback] = {}
        self._by_leg: dict[str, Callback] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        ari.on("ChannelStateChange", self._on_state_change)
        ari.on("StasisEnd", self._on_leg_gone)
        ari.on("ChannelDestroyed", self._on_leg_gone)

    def of_call(self, call_id: str) -> Callback | None:
        """The call-back in progress that is the call `call_id`, if any."""
        return next((cb for cb in self.active.values() if cb.call_id == call_id), None)

    async def end(self, call_id: str) -> bool:
        """The agent ends their call-back (the panel's End call); False: no such call-back."""
        cb = self.of_call(call_id)
        if cb is None:
            return False
        await self._finish(cb, "ended by the agent")
        return True

    def owned(self) -> set[str]:
        """Legs and bridges of the call-backs in progress (see CallControl.leave_alone)."""
        return set(self._by_leg) | {cb.bridge for cb in self.active.values()}

    async def call_back(self, number: str, *, agent_id: int, endpoint: str,
                        actor: str) -> Callback:
        """Ring the agent's phone; the caller is dialled when the agent answers.

        ``endpoint``: what the agent's leg dials (Phones.dial), their SIP user or, in a
        cluster, the node that holds their desk phone's open line
        (handoff.live.xnode.agent_endpoint), which bridges the leg with it.

        Returns as soon as the agent's phone rings. Raises BadNumber, OutboundRefused
        (no trunk may carry the number: nothing rang), or AriError when the agent's
        phone cannot be dialled.
        """
        number = check_number(number)
        trunk = await self.outbound.route(number, purpose="call_back", actor=actor)
        key = PREFIX + secrets.token_hex(6)
        line = self.lines.take(agent_id) if self.lines is not None else None
        cb = Callback(key, number, agent_id, line or role_id(key, "agent"),
                      role_id(key, "caller"), bridge_of(key), trunk=trunk.name,
                      line=line is not None)
        async with self.store.transaction() as tx:
            call = await tx.calls.create(
                caller_number=number, caller_name=await tx.contacts.name_for(number),
                caller_channel_id=cb.caller_leg, direction=CallDirection.OUTBOUND)
            handoff = await tx.handoffs.assign(call.id, agent_id, reason=CALLBACK_REASON,
                                               summary=f"called back by {actor}",
                                               agent_channel_id=cb.agent_leg)
            await tx.audit.record(actor, "call_back", f"number:{number}",
                                  {"agent_id": agent_id, "callback": key, "call": call.id})
        cb.call_id, cb.handoff_id = call.id, handoff.id
        self.active[key] = cb
        self._by_leg[cb.agent_leg] = cb
        try:
            await self.ari.bridges.create(bridge_id=cb.bridge, type="mixing")
            if cb.line:
                # One addChannel: the line leaves its holding bridge (or a card's call,
                # muted there) for this one.
                assert self.lines is not None
                await self.lines.join(cb.bridge, cb.agent_leg)
            else:
                await self.ari.channels.create(
                    self.phones.dial(endpoint), self.app, app_args=["callback", key],
                    channel_id=cb.agent_leg)
                await self._add(cb.bridge, cb.agent_leg)
            await self.ari.bridges.record(cb.bridge, f"call-{cb.call_id}", format="wav")
            if not cb.line:
                await self.ari.channels.dial(cb.agent_leg, timeout=self.ring_timeout_s)
        except AriError:
            await self._finish(cb, "agent phone unreachable")
            raise
        if cb.line:
            log.info("callback %s: agent=%s on their open line; dialling %s", key, agent_id,
                     mask_number(number))
            cb.agent_answered.set()  # the line is up: the caller is dialled now
            await self._dial_caller(cb)
        else:
            log.info("callback %s: ringing agent=%s for %s", key, agent_id,
                     mask_number(number))
        self._changed(cb)
        return cb

    def _changed(self, cb: Callback) -> None:
        if self.events is not None:
            self.events.publish(CALLS_TOPIC, CallChanged(cb.call_id))

    async def close(self) -> None:
        for cb in list(self.active.values()):
            await self._finish(cb, "controller stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- ARI events --------------------------------------------------------------------

    async def _on_state_change(self, event: Mapping[str, Any]) -> None:
        channel = event["channel"]
        cb = self._by_leg.get(str(channel["id"]))
        if cb is None or channel.get("state") != "Up":
            return
        if channel["id"] == cb.agent_leg and not cb.agent_answered.is_set():
            cb.agent_answered.set()
            await self._dial_caller(cb)
        elif channel["id"] == cb.caller_leg and not cb.connected.is_set():
            # In the ledger first: whoever sees `connected` finds the call connected.
            async with self.store.transaction() as tx:
                await tx.handoffs.apply(cb.handoff_id, HandoffEvent.AGENT_ANSWERED)
                await tx.calls.apply(cb.call_id, CallEvent.CALLBACK_ANSWERED,
                                     bridge_id=cb.bridge, agent_channel_id=cb.agent_leg)
            cb.move(CallbackEvent.CALLER_ANSWERED)
            cb.connected.set()
            self._changed(cb)
            with contextlib.suppress(AriError):
                await self.ari.playbacks.stop(role_id(cb.key, "ringback"))
            log.info("callback %s: %s answered; connected", cb.key, mask_number(cb.number))

    async def _dial_caller(self, cb: Callback) -> None:
        """The agent picked up: they hear ringback while the caller's phone rings."""
        cb.move(CallbackEvent.AGENT_ANSWERED)
        self._by_leg[cb.caller_leg] = cb
        try:
            await self.ari.channels.create(
                f"PJSIP/{cb.number}@{cb.trunk}", self.app, app_args=["callback", cb.key],
                channel_id=cb.caller_leg, originator=cb.agent_leg,
            )
            await self._add(cb.bridge, cb.caller_leg)
            await self.ari.channels.play(cb.agent_leg, "tone:ring",
                                         playback_id=role_id(cb.key, "ringback"))
            await self.ari.channels.dial(cb.caller_leg, caller=cb.agent_leg,
                                         timeout=self.ring_timeout_s)
        except AriError as exc:
            log.warning("callback %s: %s could not be dialled: %s", cb.key, mask_number(cb.number),
                        exc)
            await self._finish(cb, "caller unreachable")

    async def _on_leg_gone(self, event: Mapping[str, Any]) -> None:
        cb = self._by_leg.get(str(event["channel"]["id"]))
        if cb is not None:
            # Either side hanging up ends the callback for both.
            await self._finish(cb, f"{event['channel']['id']} hung up")

    async def _finish(self, cb: Callback, why: str) -> None:
        if self.active.pop(cb.key, None) is None:
            return
        cb.move(CallbackEvent.END)
        for leg in (cb.agent_leg, cb.caller_leg):
            self._by_leg.pop(leg, None)
            with contextlib.suppress(AriError):
                if leg == cb.agent_leg and cb.line and self.lines is not None:
                    await self.lines.release(leg)  # back to its holding bridge
                else:
                    await self.ari.channels.hangup(leg)
        with contextlib.suppress(AriNotFound, AriError):
            await self.ari.bridges.destroy(cb.bridge)
        await self._record_end(cb, why)
        cb.ended.set()
        self._changed(cb)
        if cb.agent_answered.is_set() and self.after_call is not None:
            self.after_call(cb.agent_id)
        log.info("callback %s ended: %s", cb.key, why)

    async def _record_end(self, cb: Callback, why: str) -> None:
        """Every call-back ends in the ledger with an outcome, however it ended."""
        if cb.connected.is_set():
            handoff_end, failure, outcome = HandoffEvent.END, None, CallOutcome.COMPLETED_BY_AGENT
        elif cb.agent_answered.is_set():
            # The agent was on the line; the person called never answered.
            handoff_end, failure, outcome = (HandoffEvent.FAIL, FailureReason.NOT_ANSWERED,
                                             CallOutcome.NOT_ANSWERED)
        else:
            handoff_end, failure, outcome = (HandoffEvent.FAIL, FailureReason.AGENT_NO_ANSWER,
                                             CallOutcome.FAILED)
        name = f"call-{cb.call_id}.wav"
        # Taken before the transaction: from an Asterisk on another host it is a download.
        if cb.connected.is_set():
            kept: str | None = await keep_recording(name, self.spool, self.recordings)
        else:
            kept = None
            await discard_recording(name, self.spool)  # only ringback: nobody talked
        async with self.store.transaction() as tx:
            await tx.handoffs.apply(cb.handoff_id, handoff_end, failure_reason=failure)
            await tx.calls.close(cb.call_id, outcome, end_cause=why[:64])
            if kept is not None:
                await tx.calls.set_recording(cb.call_id, kept)

    async def adopt(self) -> None:
        """After a (re)connect or a restart: take up the call-backs the ledger has open.

        The call controller's reconciliation runs it first (see CallControl.leave_alone),
        then leaves the legs named here alone. A call-back whose two legs are still up
        goes on; any other ends with its outcome and whatever is left of it is hung up.
        """
        app = await self.ari.applications.get(self.app)
        live_channels = set(app["channel_ids"])
        for cb in list(self.active.values()):
            # Known here, but a leg ended while the event socket was down.
            needed = {cb.agent_leg} | (
                {cb.caller_leg} if cb.state is not CallbackState.RINGING_AGENT else set())
            if not needed <= live_channels:
                await self._finish(cb, "ended while the event socket was down")
        async with self.store.transaction() as tx:
            # In a cluster, only those of this node's Asterisk.
            rows = list(await tx.calls.open_calls(CallDirection.OUTBOUND,
                                                  node=self.store.node))
            handoffs = {row.id: list(await tx.handoffs.open_for_call(row.id)) for row in rows}
        for row in rows:
            key = owner_of(row.caller_channel_id)
            if key in self.active or not handoffs[row.id]:
                continue
            handoff = handoffs[row.id][-1]
            # The agent's leg as the ledger has it: their open line's, or the rung one.
            cb = Callback(key, row.caller_number, handoff.accepted_by or 0,
                          handoff.agent_channel_id or role_id(key, "agent"),
                          role_id(key, "caller"), bridge_of(key),
                          call_id=row.id,
                          handoff_id=handoff.id)
            if row.state is CallState.WITH_AGENT:
                cb.agent_answered.set()
                cb.connected.set()
                cb.move(CallbackEvent.RESUME)
            self.active[key] = cb
            self._by_leg[cb.agent_leg] = self._by_leg[cb.caller_leg] = cb
            if not {cb.agent_leg, cb.caller_leg} <= live_channels:
                await self._finish(cb, "ended while the controller was away")
            elif not cb.connected.is_set():
                # Both legs up but not connected by the ledger: the person answered while
                # nobody listened; what we cannot tell for sure we end cleanly.
                await self._finish(cb, "interrupted by a controller restart")
            else:
                log.info("callback %s adopted (connected)", key)

    async def _add(self, bridge: str, leg: str) -> None:
        await add_when_in_stasis(self.ari, bridge, leg)
