"""A thin, typed asyncio client for the Asterisk REST Interface (ARI), on aiohttp.

Two halves share one :class:`AriClient`:

- REST: :meth:`AriClient.request` and typed helpers grouped by resource
  (``client.channels``, ``client.bridges``, ``client.playbacks``, ``client.recordings``,
  ``client.applications``, ``client.asterisk``). An HTTP error becomes a typed
  :class:`AriError` that names the method, the path and Asterisk's own message.
- Events: one WebSocket to ``/ari/events`` for one or more Stasis apps, kept up by a
  supervised loop with capped, jittered backoff. Asterisk does not queue events while
  nobody listens and channels stay parked in Stasis, so after every (re)connect the
  ``on_connect`` hook runs (the controller reconciles its calls there) before the
  client reports itself ready and before any new event is dispatched.

Events go through a dispatch table by type. Events with the same key (by default the
channel, so one call leg's StasisStart, ChannelStateChange, ... StasisEnd) are handled
in arrival order by one worker; different channels are handled concurrently. A failing
handler is logged and counted, never fatal.

The event machinery (dispatcher, link supervision, the reconnect loop) is
:mod:`pbx.event_link`, shared with :mod:`pbx.ami`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict, cast
from urllib.parse import quote

import aiohttp

from pbx.event_link import (
    ConnectHook,
    DisconnectHook,
    SupervisedClient,
    cancel_and_wait,
)

log = logging.getLogger(__name__)

# ---- errors ----------------------------------------------------------------------------


class AriError(Exception):
    """ARI refused a request or could not be reached.

    ``status`` is the HTTP status (0 when Asterisk was not reached at all) and
    ``message`` is Asterisk's own explanation, e.g. "Channel not in Stasis application".
    """

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        super().__init__(f"ARI {method} {path} -> {status}: {message}")


class AriBadRequest(AriError):
    """400: a parameter is wrong or names something that does not exist (e.g. a channel
    given to addChannel)."""


class AriUnauthorized(AriError):
    """401/403: the ARI user or password is wrong, or the user is read-only."""


class AriNotFound(AriError):
    """404: the channel, bridge, playback or recording in the path does not exist (often:
    the caller hung up a moment ago)."""


class AriConflict(AriError):
    """409: the object is in the wrong state, e.g. a bridge not in Stasis, a channel that
    is recording, a duplicate id."""


class AriUnprocessable(AriError):
    """422: the channel is not in a Stasis application (yet, or any more)."""


class AriServerError(AriError):
    """500 and other 5xx: Asterisk failed or refused to do it (e.g. a dangerous function
    read with live_dangerously=no, or a channel allocation failure)."""


class AriUnavailable(AriError):
    """Asterisk could not be reached or did not answer in time (status 0)."""


_ERRORS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    401: AriUnauthorized,
    403: AriUnauthorized,
    404: AriNotFound,
    409: AriConflict,
    422: AriUnprocessable,
}


def error_for(status: int, method: str, path: str, body: Any, reason: str = "") -> AriError:
    """The typed error for an HTTP error status and Asterisk's error body."""
    if isinstance(body, dict):
        # Most ARI errors say {"message": ...}; a few (channel allocation) say {"error": ...}.
        message = str(body.get("message") or body.get("error") or body)
    else:
        message = str(body or reason or "no explanation from Asterisk")
    kind = _ERRORS.get(status, AriServerError if status >= 500 else AriError)
    return kind(status, method, path, message)


# ---- ARI objects (the fields the controller reads; Asterisk sends more) -----------------


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

HangupReason = Literal[
    "normal",
    "busy",
    "congestion",
    "no_answer",
    "timeout",
    "rejected",
    "unallocated",
    "normal_unspecified",
    "number_incomplete",
    "codec_mismatch",
    "interworking",
    "failure",
    "answered_elsewhere",
]
BridgeType = Literal[
    "mixing", "holding", "dtmf_events", "proxy_media", "video_sfu", "video_single", "sdp_label"
]
Direction = Literal["none", "both", "out", "in"]
IfExists = Literal["fail", "overwrite", "append"]

Param = str | int | float | bool | None


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


def _seg(value: str) -> str:
    """One path segment; ids chosen by callers may hold characters URLs reserve."""
    return quote(value, safe="")


def _csv(values: str | Sequence[str], what: str) -> str:
    if isinstance(values, str):
        return values
    for value in values:
        if "," in value:
            # ARI splits these lists on commas; a comma inside one value would change
            # what the Stasis app receives (or which channels are bridged).
            raise ValueError(f"{what}: {value!r} contains a comma, which ARI would split")
    return ",".join(values)


def _query(params: Mapping[str, Param]) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            query[key] = "true" if value else "false"
        else:
            query[key] = str(value)
    return query


def _vars(variables: Mapping[str, str] | None) -> dict[str, Any] | None:
    return {"variables": dict(variables)} if variables else None


# ---- REST resources ----------------------------------------------------------------------


class _Resource:
    def __init__(self, client: AriClient) -> None:
        self._client = client

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Param] | None = None,
        body: Any = None,
    ) -> Any:
        return await self._client.request(method, path, params=params, body=body)


class _MediaTarget(_Resource):
    """Channels and bridges both play media, record and hold music the same way."""

    _collection = ""

    def _target(self, target_id: str) -> str:
        return f"/{self._collection}/{_seg(target_id)}"

    async def play(
        self,
        target_id: str,
        media: str | Sequence[str],
        *,
        playback_id: str | None = None,
        lang: str | None = None,
        offsetms: int | None = None,
        skipms: int | None = None,
    ) -> Playback:
        params = {
            "media": _csv(media, "media"),
            "playbackId": playback_id,
            "lang": lang,
            "offsetms": offsetms,
            "skipms": skipms,
        }
        return cast(Playback, await self._call("POST", f"{self._target(target_id)}/play", params))

    async def record(
        self,
        target_id: str,
        name: str,
        *,
        format: str = "wav",
        max_duration: int | None = None,
        max_silence: int | None = None,
        if_exists: IfExists = "fail",
        beep: bool = False,
        terminate_on: str | None = None,
    ) -> LiveRecording:
        """Record a leg, or a bridge's mix (one file holds the AI part and the human part)."""
        params = {
            "name": name,
            "format": format,
            "maxDurationSeconds": max_duration,
            "maxSilenceSeconds": max_silence,
            "ifExists": if_exists,
            "beep": beep,
            "terminateOn": terminate_on,
        }
        path = f"{self._target(target_id)}/record"
        return cast(LiveRecording, await self._call("POST", path, params))

    async def start_moh(self, target_id: str, moh_class: str | None = None) -> None:
        await self._call("POST", f"{self._target(target_id)}/moh", {"mohClass": moh_class})

    async def stop_moh(self, target_id: str) -> None:
        await self._call("DELETE", f"{self._target(target_id)}/moh")


class Channels(_MediaTarget):
    """``/channels``: call legs."""

    _collection = "channels"

    async def list(self) -> list[Channel]:
        return cast(list[Channel], await self._call("GET", "/channels"))

    async def get(self, channel_id: str) -> Channel:
        return cast(Channel, await self._call("GET", f"/channels/{_seg(channel_id)}"))

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: Sequence[str] = (),
        extension: str | None = None,
        context: str | None = None,
        priority: int | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: Sequence[str] = (),
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Dial ``endpoint``; when it answers it enters ``app`` (or the dialplan)."""
        params = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": _csv(app_args, "app_args") if app_args else None,
            "extension": extension,
            "context": context,
            "priority": priority,
            "callerId": caller_id,
            "timeout": timeout,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": _csv(formats, "formats") if formats else None,
        }
        return cast(Channel, await self._call("POST", "/channels", params, _vars(variables)))

    async def create(
        self,
        endpoint: str,
        app: str,
        *,
        app_args: Sequence[str] = (),
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: Sequence[str] = (),
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Create a leg without dialling it, so it can be bridged before :meth:`dial`.

        With ``originator`` = the caller's channel, the agent leg inherits the caller's
        linkedid and codec preferences, and the app is subscribed to both.
        """
        params = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": _csv(app_args, "app_args") if app_args else None,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": _csv(formats, "formats") if formats else None,
        }
        return cast(Channel, await self._call("POST", "/channels/create", params, _vars(variables)))

    async def dial(
        self, channel_id: str, *, caller: str | None = None, timeout: int | None = None
    ) -> None:
        await self._call(
            "POST", f"/channels/{_seg(channel_id)}/dial", {"caller": caller, "timeout": timeout}
        )

    async def answer(self, channel_id: str) -> None:
        await self._call("POST", f"/channels/{_seg(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: HangupReason = "normal") -> None:
        await self._call("DELETE", f"/channels/{_seg(channel_id)}", {"reason": reason})

    async def ring(self, channel_id: str) -> None:
        await self._call("POST", f"/channels/{_seg(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        await self._call("DELETE", f"/channels/{_seg(channel_id)}/ring")

    async def mute(self, channel_id: str, direction: Direction = "both") -> None:
        await self._call("POST", f"/channels/{_seg(channel_id)}/mute", {"direction": direction})

    async def unmute(self, channel_id: str, direction: Direction = "both") -> None:
        await self._call("DELETE", f"/channels/{_seg(channel_id)}/mute", {"direction": direction})

    async def send_dtmf(
        self, channel_id: str, dtmf: str, *, between: int | None = None, duration: int | None = None
    ) -> None:
        params = {"dtmf": dtmf, "between": between, "duration": duration}
        await self._call("POST", f"/channels/{_seg(channel_id)}/dtmf", params)

    async def get_variable(self, channel_id: str, variable: str) -> str:
        data = await self._call(
            "GET", f"/channels/{_seg(channel_id)}/variable", {"variable": variable}
        )
        return str(data.get("value", "")) if isinstance(data, dict) else ""

    async def set_variable(self, channel_id: str, variable: str, value: str | None) -> None:
        params = {"variable": variable, "value": value}
        await self._call("POST", f"/channels/{_seg(channel_id)}/variable", params)

    async def rtp_statistics(self, channel_id: str) -> dict[str, Any]:
        """The leg's RTP counters (``rxcount``: packets received from the far end...)."""
        data = await self._call("GET", f"/channels/{_seg(channel_id)}/rtp_statistics")
        return data if isinstance(data, dict) else {}

    async def move(self, channel_id: str, app: str, app_args: Sequence[str] = ()) -> None:
        """Hand the leg to another Stasis app; it stays in its bridge (no media gap)."""
        params = {"app": app, "appArgs": _csv(app_args, "app_args") if app_args else None}
        await self._call("POST", f"/channels/{_seg(channel_id)}/move", params)

    async def external_media(
        self,
        app: str,
        external_host: str,
        *,
        format: str,
        encapsulation: Literal["rtp", "audiosocket", "none"] = "rtp",
        transport: Literal["udp", "tcp", "websocket"] = "udp",
        channel_id: str | None = None,
        data: str | None = None,
        connection_type: Literal["client", "server"] | None = None,
        direction: Literal["both"] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """A media leg to an outside engine (the AI). The reply's ``channelvars`` hold
        ``UNICASTRTP_LOCAL_ADDRESS``/``_PORT`` for RTP."""
        params = {
            "app": app,
            "external_host": external_host,
            "format": format,
            "encapsulation": encapsulation,
            "transport": transport,
            "channelId": channel_id,
            "data": data,
            "connection_type": connection_type,
            "direction": direction,
        }
        return cast(
            Channel,
            await self._call("POST", "/channels/externalMedia", params, _vars(variables)),
        )

    async def external_media_rtp(
        self, app: str, external_host: str, *, format: str = "ulaw", channel_id: str | None = None
    ) -> Channel:
        return await self.external_media(app, external_host, format=format, channel_id=channel_id)

    async def external_media_audiosocket(
        self,
        app: str,
        external_host: str,
        session_uuid: str,
        *,
        format: str = "slin",
        channel_id: str | None = None,
    ) -> Channel:
        """AudioSocket leg: TCP, 20 ms slin frames; ``session_uuid`` is sent first on the
        socket so the AI engine knows which call the audio belongs to."""
        return await self.external_media(
            app,
            external_host,
            format=format,
            encapsulation="audiosocket",
            transport="tcp",
            data=session_uuid,
            channel_id=channel_id,
        )

    async def snoop(
        self,
        channel_id: str,
        app: str,
        *,
        spy: Direction = "none",
        whisper: Direction = "none",
        app_args: Sequence[str] = (),
        snoop_id: str | None = None,
    ) -> Channel:
        """A Snoop leg on ``channel_id``: ``spy`` is what the supervisor hears, ``whisper``
        what it may say (``out`` = towards the snooped channel only)."""
        params = {
            "app": app,
            "spy": spy,
            "whisper": whisper,
            "appArgs": _csv(app_args, "app_args") if app_args else None,
            "snoopId": snoop_id,
        }
        return cast(
            Channel, await self._call("POST", f"/channels/{_seg(channel_id)}/snoop", params)
        )


class Bridges(_MediaTarget):
    """``/bridges``: where legs meet; one mixing bridge per call."""

    _collection = "bridges"

    async def list(self) -> list[Bridge]:
        return cast(list[Bridge], await self._call("GET", "/bridges"))

    async def get(self, bridge_id: str) -> Bridge:
        return cast(Bridge, await self._call("GET", f"/bridges/{_seg(bridge_id)}"))

    async def create(
        self,
        *,
        bridge_id: str | None = None,
        type: BridgeType | Sequence[BridgeType] = "mixing",
        name: str | None = None,
    ) -> Bridge:
        # Order matters for combined types: "mixing,proxy_media" keeps media in Asterisk,
        # "proxy_media,mixing" gives native RTP back.
        params = {"type": _csv(type, "type"), "bridgeId": bridge_id, "name": name}
        return cast(Bridge, await self._call("POST", "/bridges", params))

    async def destroy(self, bridge_id: str) -> None:
        await self._call("DELETE", f"/bridges/{_seg(bridge_id)}")

    async def add_channel(
        self,
        bridge_id: str,
        channel: str | Sequence[str],
        *,
        role: str | None = None,
        absorb_dtmf: bool | None = None,
        mute: bool | None = None,
        inhibit_connected_line_updates: bool | None = None,
    ) -> None:
        """Put legs in the bridge; a leg in another Stasis bridge is moved (depart, then
        impart: no removeChannel first, and the gap stayed under one 20 ms frame)."""
        params = {
            "channel": _csv(channel, "channel"),
            "role": role,
            "absorbDTMF": absorb_dtmf,
            "mute": mute,
            "inhibitConnectedLineUpdates": inhibit_connected_line_updates,
        }
        await self._call("POST", f"/bridges/{_seg(bridge_id)}/addChannel", params)

    async def remove_channel(self, bridge_id: str, channel: str | Sequence[str]) -> None:
        params = {"channel": _csv(channel, "channel")}
        await self._call("POST", f"/bridges/{_seg(bridge_id)}/removeChannel", params)


class Playbacks(_Resource):
    async def get(self, playback_id: str) -> Playback:
        return cast(Playback, await self._call("GET", f"/playbacks/{_seg(playback_id)}"))

    async def stop(self, playback_id: str) -> None:
        await self._call("DELETE", f"/playbacks/{_seg(playback_id)}")


class Recordings(_Resource):
    async def get_live(self, name: str) -> LiveRecording:
        return cast(LiveRecording, await self._call("GET", f"/recordings/live/{_seg(name)}"))

    async def stop(self, name: str) -> None:
        """Stop and keep the file."""
        await self._call("POST", f"/recordings/live/{_seg(name)}/stop")

    async def cancel(self, name: str) -> None:
        """Stop and discard the file."""
        await self._call("DELETE", f"/recordings/live/{_seg(name)}")


class Applications(_Resource):
    async def list(self) -> list[Application]:
        return cast(list[Application], await self._call("GET", "/applications"))

    async def get(self, name: str) -> Application:
        """What Asterisk holds for the app: the reconciliation source after a reconnect."""
        return cast(Application, await self._call("GET", f"/applications/{_seg(name)}"))


class Endpoints(_Resource):
    async def get(self, technology: str, resource: str) -> Endpoint:
        return cast(Endpoint, await self._call(
            "GET", f"/endpoints/{_seg(technology)}/{_seg(resource)}"))


class AsteriskSystem(_Resource):
    async def info(self) -> AsteriskInfo:
        return cast(AsteriskInfo, await self._call("GET", "/asterisk/info"))

    async def ping(self) -> dict[str, str]:
        return cast(dict[str, str], await self._call("GET", "/asterisk/ping"))


# ---- the client -----------------------------------------------------------------------------


class AriClient(SupervisedClient[Event]):
    """REST calls and the event stream of one or more Stasis apps on one Asterisk.

    Lifecycle: ``await client.start()`` (or ``async with``), register handlers with
    :meth:`on`, ``await client.wait_ready()`` before taking commands, ``await
    client.close()``. REST calls work without the event stream; an empty ``apps``
    opens none.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        apps: str | Sequence[str] = (),
        *,
        on_connect: ConnectHook | None = None,
        on_disconnect: DisconnectHook | None = None,
        key: Callable[[Event], str] = event_key,
        request_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        ping_interval: float = 5.0,
        pong_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        handler_budget: float = 0.2,
        queue_size: int = 1000,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.apps: tuple[str, ...] = tuple(a for a in _csv(apps, "apps").split(",") if a)
        super().__init__(
            "ARI",
            f"ARI events for {','.join(self.apps) or '-'} at {self.base_url}",
            session="ARI event stream",
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            key=key,
            describe=describe_event,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            handler_budget=handler_budget,
            queue_size=queue_size,
            logger=log,
        )
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        # aiohttp 3.14 deprecates auth=; the header is what ARI reads anyway.
        self._headers = {"Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._pong: asyncio.Future[None] | None = None

        self.channels = Channels(self)
        self.bridges = Bridges(self)
        self.playbacks = Playbacks(self)
        self.recordings = Recordings(self)
        self.applications = Applications(self)
        self.endpoints = Endpoints(self)
        self.asterisk = AsteriskSystem(self)

    # -- lifecycle

    async def start(self) -> None:
        """Open the HTTP session and, if apps were given, start the event stream."""
        if self._closed:
            raise RuntimeError("this ARI client was closed; make a new one")
        self._http()
        if self.apps and self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="ARI events supervisor")

    async def close(self) -> None:
        """Stop at once, even in the middle of a backoff; every task is awaited."""
        if self._closed:
            return
        self._closed = True
        self._link.close()
        if self._supervisor is not None:
            await cancel_and_wait([self._supervisor])
        await self._dispatcher.close()
        if self._session is not None:
            await self._session.close()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once connected and reconciled (on_connect done); TimeoutError otherwise."""
        if self._closed:
            raise RuntimeError("this ARI client was closed")
        async with asyncio.timeout(timeout):
            await self._link.ready.wait()

    # -- events

    def on(self, event_type: str, handler: EventHandler) -> EventHandler:
        """Call ``handler`` for every event of ``event_type`` (``"*"``: every event)."""
        self._dispatcher.add(event_type, handler)
        return handler

    def off(self, event_type: str, handler: EventHandler) -> None:
        self._dispatcher.remove(event_type, handler)

    # -- REST

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Param] | None = None,
        body: Any = None,
    ) -> Any:
        """One ARI call; returns the decoded JSON (None for 204) or raises :class:`AriError`."""
        if self._closed:
            raise AriUnavailable(0, method, path, "the ARI client is closed")
        try:
            async with self._http().request(
                method, self.base_url + path, params=_query(params or {}), json=body
            ) as resp:
                text = await resp.text()
                status, reason = resp.status, resp.reason or ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AriUnavailable(0, method, path, _explain(exc)) from exc
        data: Any
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = text
        if status >= 400:
            raise error_for(status, method, path, data, reason)
        return data

    # -- the event stream

    async def _session_once(self) -> str:
        url = self.base_url.replace("http", "ws", 1) + "/events"
        params = {"app": ",".join(self.apps), "subscribeAll": "false"}
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._http().ws_connect(
                    url,
                    params=params,
                    # Our own pings: a PONG is how we tell a live Asterisk from a black hole.
                    autoping=False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            return f"handshake refused with HTTP {exc.status} {exc.message}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _explain(exc)
        try:
            # Before ready and before the first frame is read: events of calls the
            # hook reconciles wait in the socket until their state is known.
            hook_failure = await self._run_connect_hook()
            if hook_failure is not None:
                return hook_failure
            self._link_up()
            return await self._pump(ws)
        finally:
            await ws.close()

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        reader = asyncio.create_task(self._read(ws), name="ARI events reader")
        pinger = asyncio.create_task(self._ping(ws), name="ARI events pinger")
        try:
            done, _ = await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([reader, pinger])
        ended = done.pop()
        exc = ended.exception()
        return ended.result() if exc is None else f"internal error: {exc!r}"

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self._on_frame(msg.data)
            elif msg.type is aiohttp.WSMsgType.PONG:
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
            elif msg.type is aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                self._bad_frame(repr(msg.data[:80]), "binary frame")
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return f"socket error: {_explain(ws.exception())}"
            else:  # CLOSE, CLOSING, CLOSED
                return f"closed by Asterisk (code {ws.close_code})"

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        # TCP alone can take minutes to notice a dead peer (no RST through a black hole);
        # an unanswered ping within pong_timeout is the signal to reconnect.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._ping_interval)
            self._pong = loop.create_future()
            try:
                await ws.ping(b"switchboard")
            except (aiohttp.ClientError, ConnectionError) as exc:
                return f"ping failed: {_explain(exc)}"
            try:
                async with asyncio.timeout(self._pong_timeout):
                    await self._pong
            except TimeoutError:
                if self._dispatcher.backpressured:
                    continue  # we stopped reading, not Asterisk answering
                return f"no pong within {self._pong_timeout:.1f} s (Asterisk or network dead)"

    async def _on_frame(self, data: str) -> None:
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            self._bad_frame(data[:200], "not JSON")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._bad_frame(data[:200], "not an event object")
            return
        await self._dispatcher.submit(event, (event["type"],), self._key(event))

    def _bad_frame(self, sample: str, why: str) -> None:
        self.stats.bad_frames += 1
        log.warning("ARI events: skipped a frame (%s): %s", why, sample)


def _explain(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "Application",
    "AriBadRequest",
    "AriClient",
    "AriConflict",
    "AriError",
    "AriNotFound",
    "AriServerError",
    "AriUnauthorized",
    "AriUnavailable",
    "AriUnprocessable",
    "AsteriskInfo",
    "Bridge",
    "Channel",
    "Event",
    "EventHandler",
    "LiveRecording",
    "Playback",
    "describe_event",
    "error_for",
    "event_key",
]
