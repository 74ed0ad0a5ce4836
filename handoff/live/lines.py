"""The agent's open line: a browser-phone agent's leg (or an auto-answering desk
phone's, as a per-agent option), set up once when they go on duty.

Setting up a WebRTC call (INVITE, microphone, ICE, DTLS) takes a browser 100-250 ms,
none of it about the caller. So an agent on duty keeps one call to their phone up for
the whole shift, parked in a holding bridge of its own: a holding bridge mixes nothing,
so nobody hears the agent's microphone there, and it is not the call bridge, so nothing
is recorded. Accept is then one bridge operation (addChannel moves the leg out of the
holding bridge into the call's); when the agent's part of the call is over the leg goes
back to the holding bridge instead of hanging up. Going off duty hangs it up.

A card offered to an agent with an idle line stages the line: muted both ways, it moves
into the call's bridge while the card is on offer, so that Accept is only an unmute.
The move itself (addChannel: the leg departs one bridge and a new bridge thread joins
the other) answers before the leg is in the mix, and a packet capture of the browser
bench put 10-55 ms between the request and the agent's first frame leaving the PBX; an
unmute takes effect on the leg's own command queue at once. Muted both ways, a staged
line hears nothing of the caller and adds nothing to the call's mix or recording: the
mute is queued before the move on the same queue, so it is in force before the leg is
in the bridge, and a line leaves the bridge (back to its holding bridge) before it is
unmuted. A line is staged for one call at a time; taken for another call it moves there
as an idle line does.

A line is ready for Accept only once the agent's audio reaches Asterisk (its first RTP
packet), not at its SIP answer: a network that passes the signalling and drops the media
(a firewall, a VPN half up) answers lines that are deaf, and an Accept would move the
caller into silence. One whose audio never comes is hung up and opened again; lines that
never carry audio are opened again less and less often (see Timing), so an outage costs
the PBX a call a minute per agent rather than one every few seconds.

A desk phone has no tab: going on duty asks for its line. Its handset put down on a
call ends the call (as on the ringing path) and the line is called again; an idle line
it hung up stays down until the next duty (an Accept meanwhile rings the phone, and the
phone check sets the agent away after its grace, as for a phone that cannot ring).

The tab asks for the line (going on duty, after a reload, after its line dropped): it
is the only one that knows whether it still has its end of the call, so a request for
a line replaces an idle one the PBX still has. A line's ids start with ``line-<agent>``,
not with a caller's channel id: the line outlives every call it serves, so its events
are ordered per line, and this flow hands them to the call the leg is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from handoff.live.flow import Flow
from handoff.live.legs import SEP, add_when_in_stasis, destroy, hang_up
from handoff.live.routing import phone_hung_up
from handoff.states import StateMachine
from pbx.ari import AriError, AriNotFound

if TYPE_CHECKING:
    from handoff.live.call import LiveCall
    from handoff.live.control import CallControl
    from handoff.live.flow import Timing

log = logging.getLogger(__name__)

LINE_PREFIX = "line-"
# A desk phone is asked to answer the line's INVITE by itself, as intercom and paging
# calls ask it (Polycom, Yealink, Snom, Grandstream read answer-after; the URI is not
# looked at): without it the phone would ring at the desk at the start of every shift.
AUTO_ANSWER = {"PJSIP_HEADER(add,Call-Info)": "<sip:switchboard>;answer-after=0"}


class LineState(enum.StrEnum):
    RINGING = "ringing"  # the PBX calls the tab; it answers by itself
    ANSWERED = "answered"  # up as far as SIP goes; the agent's audio not heard yet
    IDLE = "idle"  # up and heard, in the agent's holding bridge
    STAGED = "staged"  # idle, but muted both ways in the bridge of a call on offer to them
    ON_CALL = "on_call"  # in a call's bridge


class LineEvent(enum.StrEnum):
    ANSWERED = "answered"
    HEARD = "heard"  # its first RTP reached Asterisk: the path a caller's audio takes
    STAGED = "staged"  # muted in the bridge of a call whose card the agent is offered
    TAKEN = "taken"  # an Accept (or a transfer, or a supervisor) moves it into a call
    PARKED = "parked"  # back in the holding bridge


LINE: StateMachine[LineState, LineEvent] = StateMachine("open line", LineState.RINGING, {
    (LineState.RINGING, LineEvent.ANSWERED): LineState.ANSWERED,
    (LineState.ANSWERED, LineEvent.HEARD): LineState.IDLE,
    (LineState.IDLE, LineEvent.TAKEN): LineState.ON_CALL,
    (LineState.IDLE, LineEvent.STAGED): LineState.STAGED,
    (LineState.STAGED, LineEvent.TAKEN): LineState.ON_CALL,
    (LineState.STAGED, LineEvent.PARKED): LineState.IDLE,
    (LineState.ON_CALL, LineEvent.PARKED): LineState.IDLE,
})


_FREE = frozenset({LineState.IDLE, LineState.STAGED})


@dataclass
class Line:
    agent_id: int
    sip_user: str
    leg: str
    bridge: str  # the agent's own holding bridge
    state: LineState = LineState.RINGING
    closing: bool = False  # off duty during a call: hung up when the call lets go of it
    desk_phone: bool = False  # a desk phone's, answered on Call-Info (no tab behind it)
    # The desk phone's handset went down on a call: the agent ended the call, as on the
    # ringing path, and stays on duty, so the line is called again once it is gone.
    reopen: bool = False
    # Set once its audio is heard or waited for in vain (see Lines.settled).
    checked: asyncio.Event = field(default_factory=asyncio.Event)
    # The call bridge it is staged in (kept while it is taken, until it has joined the
    # call it is taken for), and whether Asterisk has it muted (both ways).
    staged_in: str | None = None
    muted: bool = False
    # One move at a time: a staging's mute and addChannel must not interleave with an
    # Accept's addChannel and unmute (the leg would end up muted on the call, or
    # unmuted in another caller's bridge).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def move(self, event: LineEvent) -> None:
        self.state = LINE.transition_of(self.state, event, subject=f"agent={self.agent_id} line")

    @property
    def heard(self) -> bool:
        """The agent's audio has reached Asterisk on this line: it can carry a call."""
        return self.state in (LineState.IDLE, LineState.STAGED, LineState.ON_CALL)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "leg": self.leg}


def is_line_leg(channel_id: str) -> bool:
    return channel_id.startswith(LINE_PREFIX)


class LineRefused(Exception):
    """Open lines are turned off here, or the agent cannot have one now."""


class LineBackoff(LineRefused):
    """The agent's last lines carried no audio: the next one waits (``retry_after_s``)."""

    def __init__(self, agent_id: int, retry_after_s: float) -> None:
        super().__init__(f"the last lines to agent {agent_id} carried no audio: "
                         f"the next one in {retry_after_s:.1f} s")
        self.agent_id = agent_id
        self.retry_after_s = retry_after_s


class Reopening:
    """When each agent's next line may be called: after one that never carried audio
    (never answered, or answered deaf), Timing's line_retry_s, doubling with each failure
    in a row up to line_retry_max_s; a line heard starts again from nothing."""

    def __init__(self, timing: Timing, clock: Callable[[], float]) -> None:
        self.timing, self.clock = timing, clock
        self._failures: dict[int, int] = {}
        self._not_before: dict[int, float] = {}

    def failed(self, agent_id: int) -> float:
        """One more line of the agent's carried no audio: the pause before the next."""
        failures = self._failures.get(agent_id, 0)
        pause = min(self.timing.line_retry_max_s, self.timing.line_retry_s * 2.0 ** failures)
        self._failures[agent_id] = failures + 1
        self._not_before[agent_id] = self.clock() + pause
        return pause

    def heard(self, agent_id: int) -> None:
        self._failures.pop(agent_id, None)
        self._not_before.pop(agent_id, None)

    def wait_s(self, agent_id: int) -> float:
        """How long until the agent's next line may be called (0: now)."""
        return max(0.0, self._not_before.get(agent_id, 0.0) - self.clock())


class Lines(Flow):
    def __init__(self, ctl: CallControl, *, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(ctl)
        self.enabled = enabled
        self._lines: dict[int, Line] = {}
        self.reopening = Reopening(self.timing, clock)
        self.sleep = sleep  # a test passes its own, as it does the clock
        # Agents whose tab asked for a line and did not go off duty, by SIP user: while
        # such an agent has no line it is down (a reload, a network blip), and the phone
        # watch counts that as a phone that cannot ring.
        self._wanted: dict[str, int] = {}
        # Told when a line leaves a call for its holding bridge (supervision's whisper
        # on that leg must stop: the agent is no longer on the call).
        self._parked_listeners: list[Callable[[str], Awaitable[None]]] = []
        for kind, handler in self._handlers():
            ctl.ari.on(kind, handler)

    # ---- what others ask -----------------------------------------------------------------

    def of(self, agent_id: int) -> Line | None:
        return self._lines.get(agent_id)

    def idle(self, agent_id: int) -> bool:
        """The agent's line is free for a call: parked, or staged for a card on offer."""
        line = self._lines.get(agent_id)
        return line is not None and line.state in _FREE and not line.closing

    def owned(self) -> set[str]:
        """Every line's leg and holding bridge: no call's, and not leftovers."""
        return {i for line in self._lines.values() for i in (line.leg, line.bridge)}

    def down(self, sip_user: str) -> bool:
        """The agent wants a line and has none that carries audio (none, still ringing,
        or answered and deaf): their desk cannot take a call now."""
        agent_id = self._wanted.get(sip_user)
        if agent_id is None:
            return False
        line = self._lines.get(agent_id)
        return line is None or not line.heard

    async def settled(self, agent_id: int) -> None:
        """Until the agent's line, if its audio is being waited for, is heard or given up.

        Returns at once for any other line: an Accept on an idle line waits for nothing.
        The tab shows its line open when ICE and DTLS are done, and its first packet
        reaches the PBX a few ms later: an Accept clicked in between takes the line
        instead of ringing a phone that is busy with it.
        """
        line = self._lines.get(agent_id)
        if line is not None and line.state is LineState.ANSWERED:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timing.line_media_wait_s):
                    await line.checked.wait()

    def on_parked(self, listener: Callable[[str], Awaitable[None]]) -> None:
        self._parked_listeners.append(listener)

    # ---- the tab's requests ----------------------------------------------------------------

    async def open(self, agent_id: int, sip_user: str, *, desk_phone: bool = False) -> Line:
        """Call the agent's phone for a line (their tab answers it by itself; a desk
        phone does when asked to in the INVITE's Call-Info).

        An idle or ringing line the PBX still has is replaced: the tab asks only when it
        has no line of its own. A line on a call is left alone (the call is the agent's).
        After lines that carried no audio the next waits its turn (LineBackoff).
        """
        if not self.enabled:
            raise LineRefused("open lines are turned off on this server")
        self._wanted[sip_user] = agent_id
        if (wait := self.reopening.wait_s(agent_id)) > 0:
            raise LineBackoff(agent_id, wait)
        old = self._lines.get(agent_id)
        if old is not None:
            if old.state is LineState.ON_CALL:
                return old
            await self._hang_up(old)
        token = secrets.token_hex(3)
        owner = f"{LINE_PREFIX}{agent_id}-{token}"
        line = Line(agent_id, sip_user, f"{owner}{SEP}leg", f"{owner}{SEP}hold",
                    desk_phone=desk_phone)
        self._lines[agent_id] = line
        try:
            await self.ari.bridges.create(bridge_id=line.bridge, type="holding")
            # No caller to take codecs from: the callers' own (G.711), as a rung leg
            # gets them from its originator, so a line costs no Opus transcoding.
            await self.ari.channels.create(self.ctl.phones.dial(sip_user), self.ctl.app,
                                           app_args=["line", str(agent_id)],
                                           channel_id=line.leg, formats=["ulaw"],
                                           variables=AUTO_ANSWER if desk_phone else None)
            # Parked before it rings: its first packets have somewhere to go.
            await add_when_in_stasis(self.ari, line.bridge, line.leg)
            await self.ari.channels.dial(line.leg, timeout=self.timing.ring_timeout_s)
        except AriError as exc:
            log.warning("agent=%s: the line to %s could not be opened: %s",
                        agent_id, sip_user, exc)
            await self._hang_up(line)
            raise LineRefused(f"the phone could not be called: {exc}") from exc
        log.info("agent=%s: opening a line to %s via %s", agent_id, sip_user, line.leg)
        if desk_phone and self.store.node:
            # Where the line is, for a survivor to call the phone again if this node
            # is lost (handoff.nodes: its Asterisk held the line's only leg).
            async with self.store.transaction() as tx:
                await tx.agents.hold_line(agent_id, self.store.node)
        return line

    async def close(self, agent_id: int, sip_user: str) -> None:
        """Off duty: the line is hung up (after the call, if it is on one)."""
        self._wanted.pop(sip_user, None)
        self.reopening.heard(agent_id)  # the next duty starts afresh
        if self.store.node:
            async with self.store.transaction() as tx:
                await tx.agents.drop_line(agent_id, self.store.node)
        line = self._lines.get(agent_id)
        if line is None:
            return
        if line.state is LineState.ON_CALL:
            line.closing = True
            return
        await self._hang_up(line)

    # ---- the calls' side ---------------------------------------------------------------------

    def take(self, agent_id: int) -> str | None:
        """The agent's free line for a call (now on it), or None: ring their phone. The
        taker brings it in with join."""
        line = self._lines.get(agent_id)
        if line is None or not self.idle(agent_id):
            return None
        line.move(LineEvent.TAKEN)
        return line.leg

    async def join(self, bridge: str, leg: str) -> None:
        """A taken line into `bridge` (a call's, a supervision's, a node leg's): one
        addChannel, or none for a line staged in that very bridge; a staged line is
        unmuted once it is there (the two queue in this order on the leg's own command
        queue in Asterisk, so it is never heard or hearing in the bridge it leaves)."""
        line = self._by_leg(leg)
        if line is None:
            await self.ari.bridges.add_channel(bridge, leg)
            return
        async with line.lock:
            if line.staged_in != bridge:
                await self.ari.bridges.add_channel(bridge, leg)
            line.staged_in = None
            if line.muted:
                await self.ari.channels.unmute(leg, "both")
                line.muted = False

    def put_back(self, leg: str) -> None:
        """A take whose join failed: the line is still where it was (parked, or staged
        muted in the call it was on offer for)."""
        line = self._by_leg(leg)
        if line is not None and line.state is LineState.ON_CALL:
            line.move(LineEvent.PARKED)
            if line.staged_in is not None:
                line.move(LineEvent.STAGED)

    async def stage(self, agent_id: int, bridge: str) -> bool:
        """The agent's parked line, muted both ways, into the bridge of a call offered to
        them (lock of the call held): Accept is then an unmute. False: no parked line."""
        line = self._lines.get(agent_id)
        if line is None or line.state is not LineState.IDLE or line.closing:
            return False
        line.move(LineEvent.STAGED)
        line.staged_in, line.muted = bridge, True
        return await self._stage(line, bridge)

    async def _stage(self, line: Line, bridge: str) -> bool:
        async with line.lock:
            try:
                # Muted first: the mute is in force before the leg is in the bridge.
                await self.ari.channels.mute(line.leg, "both")
                await self.ari.bridges.add_channel(bridge, line.leg)
            except AriError as exc:
                log.warning("agent=%s: line %s could not be staged in %s: %s",
                            line.agent_id, line.leg, bridge, exc)
                if line.staged_in == bridge:
                    line.staged_in = None
                if line.state is LineState.STAGED:  # (taken meanwhile: its join moves it)
                    await self._park(line)
                return False
        return True

    async def unstage(self, bridge: str, agent_ids: list[int] | None = None) -> None:
        """The lines staged in `bridge` (of `agent_ids` only) back to their holding
        bridges, unmuted there: the card was taken by someone else, withdrawn, or the
        call is ending."""
        for line in list(self._lines.values()):
            if line.staged_in != bridge or line.state is not LineState.STAGED \
                    or (agent_ids is not None and line.agent_id not in agent_ids):
                continue
            async with line.lock:
                if line.staged_in == bridge and line.state is LineState.STAGED:
                    line.staged_in = None
                    await self._park(line)

    async def _park(self, line: Line) -> None:
        """A staged line back in its holding bridge, then unmuted (lock held); one that
        cannot be is hung up (the tab opens another)."""
        try:
            await self.ari.bridges.add_channel(line.bridge, line.leg)
            if line.muted:
                await self.ari.channels.unmute(line.leg, "both")
                line.muted = False
        except AriError as exc:
            log.warning("agent=%s: staged line %s could not be parked: %s",
                        line.agent_id, line.leg, exc)
            await self._hang_up(line)
            return
        line.move(LineEvent.PARKED)

    async def release(self, leg: str) -> None:
        """The call lets go of an agent's leg: a line goes back to its holding bridge,
        any other leg is hung up."""
        line = self._by_leg(leg)
        if line is None:
            await hang_up(self.ari, leg)
            return
        if line.closing:
            await self._hang_up(line)
            return
        try:
            async with line.lock:
                line.staged_in = None
                await self.ari.bridges.add_channel(line.bridge, leg)
                if line.muted:  # taken while staged, and let go before it joined
                    await self.ari.channels.unmute(leg, "both")
                    line.muted = False
        except AriError as exc:
            # The leg is going (its end is handled by _on_leg_gone) or the holding
            # bridge is gone: either way the line cannot be kept.
            log.warning("agent=%s: line %s could not be parked: %s", line.agent_id, leg, exc)
            await self._hang_up(line)
            return
        line.move(LineEvent.PARKED)
        log.info("agent=%s: line %s back in its holding bridge", line.agent_id, leg)
        for listener in self._parked_listeners:
            await listener(leg)

    async def shut(self) -> None:
        """The controller stops: every line is hung up (tabs open them again)."""
        for line in list(self._lines.values()):
            await self._hang_up(line)
        for kind, handler in self._handlers():
            self.ari.off(kind, handler)

    # ---- ARI events --------------------------------------------------------------------------

    async def _on_state_change(self, event: Mapping[str, Any]) -> None:
        channel = event["channel"]
        line = self._by_leg(str(channel["id"]))
        if line is not None and channel.get("state") == "Up" \
                and line.state is LineState.RINGING:
            line.move(LineEvent.ANSWERED)
            self.ctl.spawn(self._until_heard(line), f"line media agent={line.agent_id}")

    async def _until_heard(self, line: Line) -> None:
        """Idle (ready for Accept) once the agent's audio reaches Asterisk; hung up if it
        does not within the bound: its end (_on_leg_gone) counts it as carrying none."""
        try:
            heard = await self.ctl.media.until_media_from(
                line.leg, within=self.timing.line_media_wait_s,
                step=self.timing.line_media_poll_s)
            await self._verdict(line, heard is not None)
        finally:
            line.checked.set()

    async def _verdict(self, line: Line, heard: bool) -> None:
        if self._lines.get(line.agent_id) is not line or line.state is not LineState.ANSWERED:
            return  # replaced, closed or gone meanwhile
        if not heard:
            try:
                await self.ari.channels.hangup(line.leg)
            except AriNotFound:
                return  # it went by itself (the PBX's RTP timeout): _on_leg_gone has it
            log.warning("agent=%s: line %s answered but no audio reached the PBX within "
                        "%.1f s (media blocked on the way?): hung up", line.agent_id,
                        line.leg, self.timing.line_media_wait_s)
            return
        line.move(LineEvent.HEARD)
        self.reopening.heard(line.agent_id)
        log.info("agent=%s: line %s is open", line.agent_id, line.leg)

    async def _on_hangup_request(self, event: Mapping[str, Any]) -> None:
        line = self._by_leg(str(event["channel"]["id"]))
        if line is None or not line.desk_phone or line.state is not LineState.ON_CALL:
            return
        live = self._call_of(line.leg)
        if live is not None and live.agent == line.leg and phone_hung_up(event):
            # As the call's router marks a rung desk phone's BYE (it does not see line
            # legs): the call ends as completed by the agent, not re-offered.
            live.hung_up_by_phone.add(line.leg)
            line.reopen = True

    async def _on_leg_gone(self, event: Mapping[str, Any]) -> None:
        leg = str(event["channel"]["id"])
        if not is_line_leg(leg):
            return
        cause = int(event.get("cause", 0))
        line = self._by_leg(leg)
        deaf = False
        if line is not None:
            self._lines.pop(line.agent_id, None)
            await destroy(self.ari, line.bridge)
            log.info("agent=%s: line %s is down (%s, cause %s)", line.agent_id, leg,
                     line.state, cause)
            if line.desk_phone and self.store.node:
                # No node holds it now (its handset put down, its network gone): a
                # survivor of this node must not call it again, nor an off duty
                # elsewhere ask this node for it. Called again, it is held again (open).
                async with self.store.transaction() as tx:
                    await tx.agents.drop_line(line.agent_id, self.store.node)
            if not line.heard and line.sip_user in self._wanted:
                # It never carried audio (not answered, or answered deaf): the next
                # waits, longer after each such line in a row.
                pause = self.reopening.failed(line.agent_id)
                deaf = line.state is LineState.ANSWERED
                log.info("agent=%s: the next line in %.1f s at the earliest",
                         line.agent_id, pause)
        # A line on a call (also one a restarted controller adopted with its call, and
        # no longer knows as a line): its call's events are not ordered with it.
        live = self._call_of(leg)
        if live is not None and live.agent == leg:
            # As a rung leg that vanishes mid-call: the caller goes back to the AI (or,
            # a desk phone's handset put down, the call ends as the agent's).
            await self.ctl.moves.agent_gone(live, cause)
        elif live is not None and live.transfer is not None and live.transfer.leg == leg:
            await self.ctl.transfers.failed(live, cause)
        if line is not None and (line.reopen or (line.desk_phone and deaf)) \
                and line.sip_user in self._wanted:
            # Also after another node's call (handoff.live.xnode), never live here. A
            # desk phone's line answered deaf is called again too (it answers by itself:
            # only its media failed); one that did not answer stays down, as one that
            # rang at the desk each time would be rung again and again.
            self.reopen(line.agent_id, line.sip_user)

    # ---- helpers -----------------------------------------------------------------------------

    def _handlers(self) -> tuple[tuple[str, Callable[[Mapping[str, Any]], Awaitable[None]]],
                                 ...]:
        return (("ChannelStateChange", self._on_state_change),
                ("ChannelHangupRequest", self._on_hangup_request),
                ("StasisEnd", self._on_leg_gone),
                ("ChannelDestroyed", self._on_leg_gone))

    def reopen(self, agent_id: int, sip_user: str) -> None:
        """Call a desk phone for its line again (after its back-off): its handset put
        down on a call, its line answered deaf, or the node that held its line lost
        (this node survived it: the agent, on duty, wants a line here now)."""
        self._wanted[sip_user] = agent_id
        self.ctl.spawn(self._reopen(agent_id, sip_user), f"reopen line agent={agent_id}")

    async def _reopen(self, agent_id: int, sip_user: str) -> None:
        await self.sleep(self.reopening.wait_s(agent_id))
        if self._wanted.get(sip_user) != agent_id or agent_id in self._lines:
            return  # off duty meanwhile, or a line opened since (on duty again)
        # Refused: down, so no cards and away after the phone check's grace (logged).
        with contextlib.suppress(LineRefused):
            await self.open(agent_id, sip_user, desk_phone=True)

    def _by_leg(self, leg: str) -> Line | None:
        if not is_line_leg(leg):
            return None
        return next((line for line in self._lines.values() if line.leg == leg), None)

    def _call_of(self, leg: str) -> LiveCall | None:
        return next((live for live in self.ctl.calls.values()
                     if leg in (live.agent, live.transfer.leg if live.transfer else None)),
                    None)

    async def _hang_up(self, line: Line) -> None:
        if self._lines.get(line.agent_id) is line:
            del self._lines[line.agent_id]
        await hang_up(self.ari, line.leg)
        await destroy(self.ari, line.bridge)
