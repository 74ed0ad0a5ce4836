"""A fake ARI that speaks handoff.ari_api.AriApi, for unit tests of the call flow.

It keeps channels and bridges in memory and sends the events Asterisk would send, in
the order it sends them, through the real client's OrderedDispatcher keyed by the same
call key: so a handler that creates a leg sees that leg's StasisStart only after it
returns, as on a real PBX. Phones are scripted per endpoint (answer, ring, reject,
busy); the caller and the phones hang up as real ones do (a BYE's hang-up request
carries no cause; a media timeout's is soft).

It is a double at the boundary (STYLE 15): the integration tests prove the real client
and Asterisk; these tests make the controller's flows quick to exercise step by step.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from handoff.live import call_key
from pbx.ari import (
    Application,
    AriNotFound,
    AsteriskInfo,
    Bridge,
    Channel,
    EventHandler,
    LiveRecording,
    Playback,
    describe_event,
)
from pbx.ari.models import Endpoint
from pbx.ari.resources import BridgeType, Direction, HangupReason
from pbx.event_link import ConnectHook, EventStats, OrderedDispatcher

STARTED = "2026-12-01T09:00:00.000+0000"


@dataclass
class FakeChannel:
    id: str
    name: str
    state: str = "Down"
    number: str = ""
    caller_name: str = ""
    app_args: list[str] = field(default_factory=list)
    bridge: str | None = None
    doomed: bool = False  # an AI leg whose engine refuses the stream
    deaf: bool = False  # answered, but none of its RTP reaches Asterisk
    muted: bool = False  # neither heard in its bridge nor hearing it (ARI mute, both)

    def to_json(self) -> Channel:
        # As Asterisk describes a channel in Stasis; the controller reads id, name, state
        # and caller.
        return {"id": self.id, "name": self.name, "state": self.state,
                "caller": {"number": self.number, "name": self.caller_name},
                "connected": {"number": "", "name": ""}, "accountcode": "",
                "dialplan": {"context": "default", "exten": "s", "priority": 1},
                "creationtime": STARTED, "language": "en"}


class FakeAri:
    """The PBX as the controller sees it over ARI."""

    def __init__(self, app: str = "switchboard") -> None:
        self.app = app
        self.on_connect: ConnectHook | None = None
        self.stats = EventStats()
        self._dispatcher: OrderedDispatcher[dict[str, Any]] = OrderedDispatcher(
            "fake ARI events", stats=self.stats, describe=describe_event, budget=5.0)
        self.chans: dict[str, FakeChannel] = {}
        self.bridged: dict[str, set[str]] = {}
        self.moh: set[str] = set()
        self.recording: set[str] = set()
        # What was played, in order: (target URI, first media URI).
        self.played: list[tuple[str, str]] = []
        self.dialled: list[str] = []  # legs dialled, in order
        self.hangup_reasons: dict[str, str] = {}  # channels we hung up: the reason given
        self.dtmf_sent: list[tuple[str, str]] = []  # (channel, keys) sent to a leg
        self.ai_addresses: list[str] = []  # where each AI leg was asked to connect
        # What each phone does when dialled, by endpoint ("PJSIP/<sip user>").
        self.phones: dict[str, str] = {}
        self.registered: set[str] = set()
        self.ai_refusals = 0  # AI legs that die as they join the bridge; -1: every one
        self._ids = itertools.count(1)
        self.channels = _Channels(self)
        self.bridges = _Bridges(self)
        self.playbacks = _Playbacks()
        self.applications = _Applications(self)
        self.endpoints = _Endpoints(self)
        self.asterisk = _Asterisk()

    # ---- the AriApi surface ------------------------------------------------------------

    def on(self, event_type: str, handler: EventHandler) -> EventHandler:
        self._dispatcher.add(event_type, handler)
        return handler

    def off(self, event_type: str, handler: EventHandler) -> None:
        self._dispatcher.remove(event_type, handler)

    def label_keys(self, label: Callable[[str], str]) -> None:
        self._dispatcher.label = label

    def set_budget(self, seconds: float) -> None:
        """The handler budget (5 s here unless a test looks at delayed events)."""
        self._dispatcher.budget = seconds

    # ---- what the test does as the outside world ----------------------------------------

    async def caller_dials(self, assistant: str | None = "receptionist",
                           number: str = "+33123456789", name: str = "Jeanne",
                           dialled: str = "2000") -> str:
        """A caller reaches an assistant's number (None: a number the dialplan routes to
        no assistant, its catch-all); returns their channel id."""
        args = ["inbound", assistant, dialled] if assistant else ["unknown", dialled]
        channel = self._new(f"PJSIP/carrier-{next(self._ids):08x}", "Ring", number=number,
                            caller_name=name, app_args=args)
        await self._emit({"type": "StasisStart", "channel": channel.to_json(),
                          "args": channel.app_args})
        return channel.id

    async def answer_phone(self, leg: str) -> None:
        """A ringing phone is picked up."""
        channel = self._get(leg)
        channel.state = "Up"
        await self._emit({"type": "ChannelStateChange", "channel": channel.to_json()})

    async def hang_up_phone(self, leg: str) -> None:
        """The far end sends BYE (the caller, or an agent putting the handset down)."""
        await self._gone(leg, {"soft": False}, cause=16)

    async def lose_phone(self, leg: str) -> None:
        """The far end went silent: Asterisk's RTP timeout hangs the leg up."""
        await self._gone(leg, {"soft": True, "cause": 1}, cause=44)

    async def drop_ai(self, leg: str) -> None:
        """The AI engine closes its AudioSocket connection mid-call."""
        await self._gone(leg, {"soft": True, "cause": 32}, cause=16)

    def legs(self, endpoint_prefix: str) -> list[str]:
        return [c.id for c in self.chans.values() if c.name.startswith(endpoint_prefix)]

    async def idle(self, within: float = 5.0) -> None:
        """Until every queued event has been handled."""
        deadline = asyncio.get_running_loop().time() + within
        while self._dispatcher.busy_keys:
            assert asyncio.get_running_loop().time() < deadline, "events still queued"
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        await self._dispatcher.close()

    # ---- internals ---------------------------------------------------------------------

    def _new(self, name: str, state: str, *, channel_id: str | None = None, number: str = "",
             caller_name: str = "", app_args: Sequence[str] = ()) -> FakeChannel:
        channel_id = channel_id or f"{1700000000 + next(self._ids)}.{next(self._ids)}"
        channel = FakeChannel(channel_id, name, state, number, caller_name, list(app_args))
        self.chans[channel_id] = channel
        return channel

    def _get(self, channel_id: str) -> FakeChannel:
        channel = self.chans.get(channel_id)
        if channel is None:
            raise AriNotFound(404, "GET", f"/channels/{channel_id}", "Channel not found")
        return channel

    async def press(self, channel: str, digit: str) -> None:
        """The phone on ``channel`` sends a DTMF key."""
        await self._emit({"type": "ChannelDtmfReceived", "channel": {"id": channel},
                          "digit": digit})

    async def _emit(self, event: dict[str, Any]) -> None:
        await self._dispatcher.submit(event, (event["type"],), call_key(event))

    async def _gone(self, leg: str, request: dict[str, Any], cause: int) -> None:
        channel = self.chans.pop(leg, None)
        if channel is None:
            return
        if channel.bridge is not None:
            self.bridged.get(channel.bridge, set()).discard(leg)
        body = channel.to_json()
        await self._emit({"type": "ChannelHangupRequest", "channel": body, **request})
        await self._emit({"type": "StasisEnd", "channel": body})
        await self._emit({"type": "ChannelDestroyed", "channel": body, "cause": cause})

    async def _started(self, channel: FakeChannel) -> None:
        await self._emit({"type": "StasisStart", "channel": channel.to_json(),
                          "args": channel.app_args})


class _Channels:
    def __init__(self, ari: FakeAri) -> None:
        self.ari = ari

    async def get(self, target_id: str) -> Channel:
        return self.ari._get(target_id).to_json()

    async def create(self, endpoint: str, app: str, *, app_args: Sequence[str] = (),
                     channel_id: str | None = None,
                     originator: str | None = None,
                     formats: Sequence[str] = (),
                     variables: Mapping[str, str] | None = None) -> Channel:
        channel = self.ari._new(f"{endpoint}-{next(self.ari._ids):08x}", "Down",
                                channel_id=channel_id, app_args=app_args)
        await self.ari._started(channel)
        return channel.to_json()

    async def dial(self, channel_id: str, *, caller: str | None = None,
                   timeout: int | None = None) -> None:
        channel = self.ari._get(channel_id)
        self.ari.dialled.append(channel_id)
        endpoint = channel.name.rsplit("-", 1)[0]
        behaviour = self.ari.phones.get(endpoint, "answer")
        channel.state = "Ringing"
        if behaviour in ("answer", "deaf"):
            # deaf: the SIP gets through and its media does not (a firewall dropping RTP).
            channel.deaf = behaviour == "deaf"
            await self.ari.answer_phone(channel_id)
        elif behaviour in ("reject", "busy", "no_answer"):
            # The phone's refusal: 603 Decline / 486 Busy / a ring timeout.
            cause = {"reject": 21, "busy": 17, "no_answer": 19}[behaviour]
            await self.ari._gone(channel_id, {"soft": False, "cause": cause}, cause=cause)

    async def answer(self, channel_id: str) -> None:
        self.ari._get(channel_id).state = "Up"

    async def ring(self, channel_id: str) -> None:
        self.ari._get(channel_id)

    async def hangup(self, channel_id: str, reason: HangupReason = "normal") -> None:
        self.ari._get(channel_id)
        self.ari.hangup_reasons[channel_id] = reason
        await self.ari._gone(channel_id, {"soft": True, "cause": 32}, cause=16)

    async def play(self, target_id: str, media: str | Sequence[str], *,
                   playback_id: str | None = None) -> Playback:
        return await _play(self.ari, f"channel:{target_id}", media, playback_id)

    async def send_dtmf(self, channel_id: str, dtmf: str, *, between: int | None = None,
                        duration: int | None = None) -> None:
        self.ari._get(channel_id)
        self.ari.dtmf_sent.append((channel_id, dtmf))

    async def mute(self, channel_id: str, direction: Direction = "both") -> None:
        # Muted "both" here means neither heard nor hearing: only "both" is used.
        assert direction == "both"
        self.ari._get(channel_id).muted = True

    async def unmute(self, channel_id: str, direction: Direction = "both") -> None:
        assert direction == "both"
        self.ari._get(channel_id).muted = False

    async def rtp_statistics(self, channel_id: str) -> dict[str, Any]:
        channel = self.ari._get(channel_id)
        return {"rxcount": 1 if channel.state == "Up" and not channel.deaf else 0}

    async def set_variable(self, channel_id: str, variable: str,
                           value: str | None) -> None:
        channel = self.ari._get(channel_id)
        if variable == "TALK_DETECT(set)" and channel.name.startswith("AudioSocket/"):
            # The AI speaks at once on a new connection.
            await self.ari._emit({"type": "ChannelTalkingStarted",
                                  "channel": channel.to_json()})

    async def snoop(self, channel_id: str, app: str, *, spy: Direction = "none",
                    whisper: Direction = "none", app_args: Sequence[str] = (),
                    snoop_id: str | None = None) -> Channel:
        self.ari._get(channel_id)
        channel = self.ari._new(f"Snoop/{channel_id}", "Up", channel_id=snoop_id,
                                app_args=app_args)
        await self.ari._started(channel)
        return channel.to_json()

    async def external_media_audiosocket(self, app: str, external_host: str,
                                         session_uuid: str, *,
                                         channel_id: str | None = None) -> Channel:
        self.ari.ai_addresses.append(external_host)
        channel = self.ari._new(f"AudioSocket/{external_host}-{session_uuid}", "Up",
                                channel_id=channel_id)
        if self.ari.ai_refusals:
            channel.doomed = True
            self.ari.ai_refusals -= self.ari.ai_refusals > 0
        await self.ari._started(channel)
        return channel.to_json()


class _Bridges:
    def __init__(self, ari: FakeAri) -> None:
        self.ari = ari

    async def create(self, *, bridge_id: str | None = None,
                     type: BridgeType | Sequence[BridgeType] = "mixing") -> Bridge:
        bridge_id = bridge_id or f"bridge-{next(self.ari._ids)}"
        self.ari.bridged[bridge_id] = set()
        return {"id": bridge_id, "channels": [], "technology": "simple_bridge",
                "bridge_type": type if isinstance(type, str) else ",".join(type),
                "bridge_class": "stasis", "creator": "Stasis", "name": ""}

    async def destroy(self, bridge_id: str) -> None:
        if self.ari.bridged.pop(bridge_id, None) is None:
            raise AriNotFound(404, "DELETE", f"/bridges/{bridge_id}", "Bridge not found")
        self.ari.moh.discard(bridge_id)
        self.ari.recording.discard(bridge_id)

    async def add_channel(self, bridge_id: str, channel: str | Sequence[str]) -> None:
        members = self.ari.bridged.get(bridge_id)
        if members is None:
            raise AriNotFound(404, "POST", f"/bridges/{bridge_id}", "Bridge not found")
        for leg in [channel] if isinstance(channel, str) else channel:
            fake = self.ari._get(leg)
            if fake.bridge is not None:
                self.ari.bridged.get(fake.bridge, set()).discard(leg)
            fake.bridge = bridge_id
            members.add(leg)
            if fake.doomed:
                await self.ari.drop_ai(leg)
            else:
                await self.ari._emit({"type": "ChannelEnteredBridge", "channel": fake.to_json(),
                                      "bridge": {"id": bridge_id}})

    async def record(self, target_id: str, name: str, *,
                     format: str = "wav") -> LiveRecording:
        self.ari.recording.add(target_id)
        return {"name": name, "format": format, "state": "recording",
                "target_uri": f"bridge:{target_id}"}

    async def play(self, target_id: str, media: str | Sequence[str], *,
                   playback_id: str | None = None) -> Playback:
        return await _play(self.ari, f"bridge:{target_id}", media, playback_id)

    async def start_moh(self, target_id: str, moh_class: str | None = None) -> None:
        self.ari.moh.add(target_id)

    async def stop_moh(self, target_id: str) -> None:
        self.ari.moh.discard(target_id)


async def _play(ari: FakeAri, target_uri: str, media: str | Sequence[str],
                playback_id: str | None) -> Playback:
    ari.played.append((target_uri, media if isinstance(media, str) else media[0]))
    playback: Playback = {
        "id": playback_id or f"playback-{next(ari._ids)}", "target_uri": target_uri,
        "media_uri": media if isinstance(media, str) else media[0], "language": "en",
        "state": "done"}
    await ari._emit({"type": "PlaybackFinished", "playback": playback})
    return playback


class _Playbacks:
    async def stop(self, playback_id: str) -> None:
        return None


class _Applications:
    def __init__(self, ari: FakeAri) -> None:
        self.ari = ari

    async def get(self, name: str) -> Application:
        return {"name": name, "channel_ids": list(self.ari.chans),
                "bridge_ids": list(self.ari.bridged), "endpoint_ids": [], "device_names": [],
                "events_allowed": [], "events_disallowed": []}


class _Endpoints:
    def __init__(self, ari: FakeAri) -> None:
        self.ari = ari

    async def get(self, technology: str, resource: str) -> Endpoint:
        state = "online" if resource in self.ari.registered else "offline"
        return {"technology": technology, "resource": resource, "state": state,
                "channel_ids": []}


class _Asterisk:
    async def info(self) -> AsteriskInfo:
        return {"status": {"startup_time": STARTED}}
