"""What ARI sends: its objects as TypedDicts (the fields the controller reads; Asterisk
sends more), events, and the two things the client needs to know about an event: which
call leg it belongs to (:func:`event_key`, the ordering key) and how to name it in a log
line (:func:`describe_event`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NotRequired, TypedDict

# Every event type Asterisk 22's ARI defines (rest-api/events.json, the subtypes of
# Event). Another type is still handed on by name, but counted (EventStats.unknown_events)
# and logged once: a newer Asterisk speaks it, or the link carries garbage that parses.
ARI_EVENT_TYPES = frozenset({
    "ApplicationMoveFailed", "ApplicationRegistered", "ApplicationReplaced",
    "ApplicationUnregistered", "BridgeAttendedTransfer", "BridgeBlindTransfer",
    "BridgeCreated", "BridgeDestroyed", "BridgeMerged", "BridgeVideoSourceChanged",
    "CallBroadcast", "CallClaimed", "ChannelCallerId", "ChannelConnectedLine",
    "ChannelCreated", "ChannelDestroyed", "ChannelDialplan", "ChannelDtmfReceived",
    "ChannelEnteredBridge", "ChannelHangupRequest", "ChannelHold", "ChannelLeftBridge",
    "ChannelStateChange", "ChannelTalkingFinished", "ChannelTalkingStarted",
    "ChannelToneDetected", "ChannelTransfer", "ChannelUnhold", "ChannelUserevent",
    "ChannelVarset", "ContactStatusChange", "DeviceStateChanged", "Dial",
    "EndpointStateChange", "PeerStatusChange", "PlaybackContinuing", "PlaybackFinished",
    "PlaybackStarted", "RESTResponse", "RecordingFailed", "RecordingFinished",
    "RecordingStarted", "StasisEnd", "StasisStart", "TextMessageReceived",
})


class CallerId(TypedDict):
    name: str
    number: str


class DialplanCep(TypedDict):
    context: str
    exten: str
    priority: int
    app_name: NotRequired[str]
    app_data: NotRequired[str]


class Channel(TypedDict):
    id: str
    name: str
    state: str
    caller: CallerId
    connected: CallerId
    accountcode: str
    dialplan: DialplanCep
    creationtime: str
    language: str
    protocol_id: NotRequired[str]
    channelvars: NotRequired[dict[str, str]]
    caller_rdnis: NotRequired[str]


class Bridge(TypedDict):
    id: str
    technology: str
    bridge_type: str
    bridge_class: str
    creator: str
    name: str
    channels: list[str]
    creationtime: NotRequired[str]
    video_mode: NotRequired[str]


class Playback(TypedDict):
    id: str
    media_uri: str
    target_uri: str
    language: str
    state: str
    next_media_uri: NotRequired[str]


class LiveRecording(TypedDict):
    name: str
    format: str
    target_uri: str
    state: str
    duration: NotRequired[int]
    talking_duration: NotRequired[int]
    silence_duration: NotRequired[int]
    cause: NotRequired[str]


class Application(TypedDict):
    name: str
    channel_ids: list[str]
    bridge_ids: list[str]
    endpoint_ids: list[str]
    device_names: list[str]
    events_allowed: list[Any]
    events_disallowed: list[Any]


class Endpoint(TypedDict):
    technology: str
    resource: str
    # "online" once a phone's contact is registered and answers (or is not qualified
    # yet), "offline" with no contact or only unreachable ones.
    state: NotRequired[str]
    channel_ids: list[str]


class AsteriskInfo(TypedDict, total=False):
    build: dict[str, Any]
    system: dict[str, Any]
    config: dict[str, Any]
    status: dict[str, Any]


Event = dict[str, Any]
"""An ARI event as Asterisk sent it: ``type``, ``application``, ``timestamp`` and the
objects it concerns (``channel``, ``bridge``, ``playback``, ...)."""

EventHandler = Callable[[Event], Awaitable[None]]


def event_key(event: Event) -> str:
    """Default ordering key: the channel an event concerns, else its bridge, else global.

    Playback and recording events carry their target as ``channel:<id>`` or
    ``bridge:<id>``, so a PlaybackFinished is ordered with the rest of that leg.
    """
    for field in ("channel", "peer", "bridge"):
        obj = event.get(field)
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            return f"{'bridge' if field == 'bridge' else 'channel'}:{obj['id']}"
    for field in ("playback", "recording"):
        obj = event.get(field)
        if isinstance(obj, dict) and isinstance(obj.get("target_uri"), str):
            return str(obj["target_uri"])
    return "global"


def describe_event(event: Event) -> str:
    """``StasisStart channel 1732.4 bridge b-1``: what a log line about an event needs."""
    parts = [str(event.get("type", "?"))]
    for field in ("channel", "bridge"):
        obj = event.get(field)
        if isinstance(obj, dict):
            parts.append(f"{field} {obj.get('id')}")
    return " ".join(parts)
