"""Which live call an ARI event is about, and which flow it goes to.

A leg enters the Stasis app with arguments that say whose it is (see
:mod:`handoff.live.legs`): ``inbound <assistant>`` starts a call; the legs the
controller creates itself (``agent``, ``forward``, the AI's external media) need nothing
at their start. Every later event of a call's legs is found by the owner prefix of its
channel id and handed to the flow of that leg: the caller's, the agent's, a transfer's,
the fallback number's, the AI's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from handoff.live.call import LiveCall
from handoff.live.legs import call_key

if TYPE_CHECKING:
    from handoff.live.control import CallControl

log = logging.getLogger(__name__)

_NORMAL_CLEARING = 16
# A soft hang-up's "cause" is Asterisk's soft-hangup flag (see phone_hung_up): this one
# is a channel driver's own, which PJSIP raises when the RTP timeout runs out.
SOFTHANGUP_DEV = 1

StasisHandler = Callable[[Mapping[str, Any], list[str]], Awaitable[None]]


class Registry:
    """The live calls of this controller, by call id and by the caller's channel id."""

    def __init__(self) -> None:
        self.by_id: dict[str, LiveCall] = {}
        self._by_caller: dict[str, LiveCall] = {}

    def add(self, live: LiveCall) -> None:
        self.by_id[live.call_id] = live
        self._by_caller[live.caller] = live

    def remove(self, live: LiveCall) -> None:
        self.by_id.pop(live.call_id, None)
        self._by_caller.pop(live.caller, None)

    def of_event(self, event: Mapping[str, Any]) -> LiveCall | None:
        """The call whose leg, bridge or playback the event is about, if it is ours."""
        return self._by_caller.get(call_key(event))

    def label(self, key: str) -> str:
        """How a log line names an ARI ordering key (a caller's channel id): by its call,
        so a delayed event is found with the rest of that call's story."""
        live = self._by_caller.get(key)
        return f"call={live.call_id} caller={key}" if live else f"channel {key}"


def phone_hung_up(event: Mapping[str, Any]) -> bool:
    """Whether a ChannelHangupRequest is the leg's own phone ending the call normally.

    What Asterisk 22 reports (observed on this PBX): a phone's BYE queues the hang-up
    with no cause, or with its RFC 3326 Reason's cause (Q.850 16 from a phone that says
    "normal clearing"); a refused INVITE carries the refusal's cause (408: 18, 480: 19,
    503: 34). Hang-ups of Asterisk's own are soft, and their "cause" is its soft-hangup
    flag, not a Q.850 cause: the RTP timeout's is 1 (its cause 44 comes only with
    ChannelDestroyed), an ARI hang-up's 32. A browser closing the Desk hangs up with a
    Reason of its own (softphone.js), so a closed tab is not an agent ending the call.
    """
    return not event.get("soft") and int(event.get("cause", _NORMAL_CLEARING)) == (
        _NORMAL_CLEARING)


class Router:
    """Subscribes the controller to ARI once and sends each event to its flow."""

    def __init__(self, ctl: CallControl) -> None:
        self.ctl = ctl
        self._stasis: dict[str, StasisHandler] = {"inbound": self._inbound,
                                                  "unknown": self._unknown}
        for kind, handler in (
            ("StasisStart", self._on_stasis_start),
            ("ChannelStateChange", self._on_state_change),
            ("ChannelHangupRequest", self._on_hangup_request),
            ("ChannelDestroyed", self._on_leg_gone),
            ("StasisEnd", self._on_leg_gone),
            ("ChannelTalkingStarted", ctl.media.on_talking),
            ("PlaybackFinished", ctl.media.on_playback_finished),
            ("ChannelDtmfReceived", ctl.menus.on_dtmf),
            ("ChannelDtmfReceived", ctl.ai.on_caller_key),
            ("ChannelEnteredBridge", ctl.ai.on_entered_bridge),
            ("ChannelVarset", ctl.quality.on_varset),
            ("StasisEnd", ctl.quality.forget),
        ):
            ctl.ari.on(kind, handler)
        ctl.ari.label_keys(ctl.registry.label)

    def on_stasis(self, first_arg: str, handler: StasisHandler) -> None:
        """Legs that enter the app with ``first_arg`` go to ``handler`` (with the rest)."""
        self._stasis[first_arg] = handler

    async def _on_stasis_start(self, event: Mapping[str, Any]) -> None:
        args = [str(arg) for arg in event.get("args") or []]
        handler = self._stasis.get(args[0]) if args else None
        if handler is not None:
            await handler(event["channel"], args[1:])

    async def _inbound(self, channel: Mapping[str, Any], args: list[str]) -> None:
        """``inbound <assistant> <number>``: a number an assistant answers."""
        if args:
            await self.ctl.lifecycle.start(channel, args[0], _dialled(channel, args[1:]))

    async def _unknown(self, channel: Mapping[str, Any], args: list[str]) -> None:
        """``unknown <number>``: the dialplan's catch-all, a number no assistant answers."""
        await self.ctl.lifecycle.start(channel, None, _dialled(channel, args))

    async def _on_state_change(self, event: Mapping[str, Any]) -> None:
        channel = event["channel"]
        live = self.ctl.registry.of_event(event)
        if live is None or channel.get("state") != "Up":
            return
        if channel["id"] == live.forward:
            await self.ctl.offers.forward_answered(live)
        elif live.transfer is not None and channel["id"] == live.transfer.leg:
            self.ctl.spawn(self.ctl.transfers.complete(live), f"transfer call={live.call_id}")
        elif channel["id"] == live.agent:
            await self.ctl.moves.agent_answered(live)

    async def _on_hangup_request(self, event: Mapping[str, Any]) -> None:
        live = self.ctl.registry.of_event(event)
        if live is None:
            return
        channel = str(event["channel"]["id"])
        if "cause" in event:
            live.causes[channel] = int(event["cause"])
        if channel == live.agent and phone_hung_up(event):
            # Known only now: the StasisEnd that ends the leg for us carries no cause.
            live.hung_up_by_phone.add(channel)
        if channel == live.caller:
            ours = live.ending
            live.hangup_seen()
            if event.get("soft") and not ours:
                # A soft hang-up we did not ask for comes from Asterisk itself. Its
                # flag tells which part: the caller's channel driver gave up on the
                # line (PJSIP's RTP timeout: the caller's network or carrier went
                # silent), or Asterisk is going down (a shutdown or restart, or an
                # administrator's `channel request hangup`).
                if int(event.get("cause", 0)) == SOFTHANGUP_DEV:
                    live.line_lost = True
                else:
                    live.pbx_hangup = True

    async def _on_leg_gone(self, event: Mapping[str, Any]) -> None:
        """StasisEnd or ChannelDestroyed, whichever comes first, ends a leg for us.

        Once a channel leaves Stasis the app is no longer subscribed to it, so its
        ChannelDestroyed may never reach us; its cause was kept from the hang-up request.
        """
        channel_id = str(event["channel"]["id"])
        live = self.ctl.registry.of_event(event)
        if live is None:
            return
        if "cause" in event:
            live.causes[channel_id] = int(event["cause"])
        cause = live.causes.get(channel_id, 0)
        if channel_id == live.caller:
            await self.ctl.lifecycle.caller_gone(live, cause)
        elif channel_id == live.forward:
            await self.ctl.offers.forward_gone(live)
        elif channel_id == live.agent:
            await self.ctl.moves.agent_gone(live, cause)
        elif live.transfer is not None and channel_id == live.transfer.leg:
            await self.ctl.transfers.failed(live, cause)
        elif channel_id == live.ai and not live.ending:
            log.warning("call=%s: AI leg %s ended unexpectedly (cause %s)",
                        live.call_id, channel_id, cause)
            live.ai = None
            self.ctl.spawn(self.ctl.ai.lost(live), f"AI lost call={live.call_id}")


def _dialled(channel: Mapping[str, Any], args: list[str]) -> str:
    """The number the caller dialled, as the dialplan passed it (digits and '+' only)."""
    return args[0] if args else str(channel.get("dialplan", {}).get("exten", ""))
