"""ARI's REST resources, grouped as Asterisk groups them (``client.channels``,
``client.bridges``, ...), with the parameter types they accept and the encoding of paths,
comma lists and query strings that ARI expects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypedDict, TypeVar, Unpack, cast
from urllib.parse import quote

from pbx.ari.models import (
    Application,
    AsteriskInfo,
    Bridge,
    Channel,
    Endpoint,
    LiveRecording,
    Playback,
)

if TYPE_CHECKING:
    from pbx.ari.client import AriClient

T = TypeVar("T", Channel, Bridge)
"""What a media target resource returns: a channel or a bridge."""

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


class NewLeg(TypedDict, total=False):
    """What both ways of making a leg take (``POST /channels`` and ``/channels/create``)."""

    app_args: Sequence[str]
    channel_id: str | None
    other_channel_id: str | None
    originator: str | None
    formats: Sequence[str]
    variables: Mapping[str, str] | None


def _new_leg(endpoint: str, app: str | None, leg: NewLeg) -> dict[str, Param]:
    """The query of a new leg, either way it is made."""
    app_args, formats = leg.get("app_args", ()), leg.get("formats", ())
    return {
        "endpoint": endpoint,
        "app": app,
        "appArgs": _csv(app_args, "app_args") if app_args else None,
        "channelId": leg.get("channel_id"),
        "otherChannelId": leg.get("other_channel_id"),
        "originator": leg.get("originator"),
        "formats": _csv(formats, "formats") if formats else None,
    }


class _Resource:
    def __init__(self, client: AriClient) -> None:
        # One way to Asterisk for every resource: the client's session and typed errors.
        self._call = client.request
        self._download = client.download


class _MediaTarget(_Resource, Generic[T]):
    """Channels and bridges both play media, record and hold music the same way."""

    _collection = ""

    def _target(self, target_id: str) -> str:
        return f"/{self._collection}/{_seg(target_id)}"

    async def get(self, target_id: str) -> T:
        return cast(T, await self._call("GET", self._target(target_id)))

    async def list(self) -> list[T]:
        return cast(list[T], await self._call("GET", f"/{self._collection}"))

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


class Channels(_MediaTarget[Channel]):
    """``/channels``: call legs."""

    _collection = "channels"

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        extension: str | None = None,
        context: str | None = None,
        priority: int | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,
        **leg: Unpack[NewLeg],
    ) -> Channel:
        """Dial ``endpoint``; when it answers it enters ``app`` (or the dialplan)."""
        params = {
            **_new_leg(endpoint, app, leg),
            "extension": extension,
            "context": context,
            "priority": priority,
            "callerId": caller_id,
            "timeout": timeout,
        }
        body = _vars(leg.get("variables"))
        return cast(Channel, await self._call("POST", "/channels", params, body))

    async def create(self, endpoint: str, app: str, **leg: Unpack[NewLeg]) -> Channel:
        """Create a leg without dialling it, so it can be bridged before :meth:`dial`.

        With ``originator`` = the caller's channel, the agent leg inherits the caller's
        linkedid and codec preferences, and the app is subscribed to both.
        """
        params = _new_leg(endpoint, app, leg)
        body = _vars(leg.get("variables"))
        return cast(Channel, await self._call("POST", "/channels/create", params, body))

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


class Bridges(_MediaTarget[Bridge]):
    """``/bridges``: where legs meet; one mixing bridge per call."""

    _collection = "bridges"

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

    async def stored_file(self, name: str) -> bytes:
        """A finished recording's audio, from Asterisk's spool on whatever host it runs."""
        return await self._download(f"/recordings/stored/{_seg(name)}/file")

    async def delete_stored(self, name: str) -> None:
        await self._call("DELETE", f"/recordings/stored/{_seg(name)}")


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

    async def modules(self) -> list[dict[str, Any]]:
        """Every module Asterisk knows: ``name`` (res_pjsip.so), ``status`` (Running)."""
        return cast(list[dict[str, Any]], await self._call("GET", "/asterisk/modules"))

    async def reload_module(self, name: str) -> None:
        """What `module reload NAME` does on the CLI, through ARI's own user: no AMI
        command or system class is needed to make Asterisk read its files again."""
        await self._call("PUT", f"/asterisk/modules/{_seg(name)}")
