"""What the live-call services ask of ARI: the small part of :class:`pbx.ari.AriClient`
they use, as a Protocol.

The product passes the real client; the unit tests of the call flow pass a fake that
speaks the same Protocol (tests/unit/fake_ari.py), while the integration tests prove the
real client against a real Asterisk. A method the controller starts using is added here
first, so the fake cannot silently fall behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pbx.ari import (
    Application,
    AsteriskInfo,
    Bridge,
    Channel,
    EventHandler,
    LiveRecording,
    Playback,
)
from pbx.ari.models import Endpoint
from pbx.ari.resources import BridgeType, Direction, HangupReason
from pbx.event_link import ConnectHook


class ChannelsApi(Protocol):
    async def get(self, target_id: str) -> Channel: ...

    async def create(self, endpoint: str, app: str, *, app_args: Sequence[str] = (),
                     channel_id: str | None = None,
                     originator: str | None = None,
                     formats: Sequence[str] = (),
                     variables: Mapping[str, str] | None = None) -> Channel: ...

    async def dial(self, channel_id: str, *, caller: str | None = None,
                   timeout: int | None = None) -> None: ...

    async def answer(self, channel_id: str) -> None: ...

    async def ring(self, channel_id: str) -> None: ...

    async def hangup(self, channel_id: str, reason: HangupReason = "normal") -> None: ...

    async def send_dtmf(self, channel_id: str, dtmf: str, *, between: int | None = None,
                        duration: int | None = None) -> None: ...

    async def mute(self, channel_id: str, direction: Direction = "both") -> None: ...

    async def unmute(self, channel_id: str, direction: Direction = "both") -> None: ...

    async def play(self, target_id: str, media: str | Sequence[str], *,
                   playback_id: str | None = None) -> Playback: ...

    async def rtp_statistics(self, channel_id: str) -> dict[str, Any]: ...

    async def set_variable(self, channel_id: str, variable: str,
                           value: str | None) -> None: ...

    async def snoop(self, channel_id: str, app: str, *, spy: Direction = "none",
                    whisper: Direction = "none", app_args: Sequence[str] = (),
                    snoop_id: str | None = None) -> Channel: ...

    async def external_media_audiosocket(self, app: str, external_host: str,
                                         session_uuid: str, *,
                                         channel_id: str | None = None) -> Channel: ...


class BridgesApi(Protocol):
    async def create(self, *, bridge_id: str | None = None,
                     type: BridgeType | Sequence[BridgeType] = "mixing") -> Bridge: ...

    async def destroy(self, bridge_id: str) -> None: ...

    async def add_channel(self, bridge_id: str, channel: str | Sequence[str]) -> None: ...

    async def record(self, target_id: str, name: str, *,
                     format: str = "wav") -> LiveRecording: ...

    async def play(self, target_id: str, media: str | Sequence[str], *,
                   playback_id: str | None = None) -> Playback: ...

    async def start_moh(self, target_id: str, moh_class: str | None = None) -> None: ...

    async def stop_moh(self, target_id: str) -> None: ...


class PlaybacksApi(Protocol):
    async def stop(self, playback_id: str) -> None: ...


class ApplicationsApi(Protocol):
    async def get(self, name: str) -> Application: ...


class EndpointsApi(Protocol):
    async def get(self, technology: str, resource: str) -> Endpoint: ...


class AsteriskApi(Protocol):
    async def info(self) -> AsteriskInfo: ...


class AriApi(Protocol):
    """REST resources, the event handlers' registry, and the hook run on every
    (re)connect of the event stream (the controller reconciles there)."""

    on_connect: ConnectHook | None

    @property
    def channels(self) -> ChannelsApi: ...

    @property
    def bridges(self) -> BridgesApi: ...

    @property
    def playbacks(self) -> PlaybacksApi: ...

    @property
    def applications(self) -> ApplicationsApi: ...

    @property
    def endpoints(self) -> EndpointsApi: ...

    @property
    def asterisk(self) -> AsteriskApi: ...

    def on(self, event_type: str, handler: EventHandler) -> EventHandler: ...

    def off(self, event_type: str, handler: EventHandler) -> None: ...

    def label_keys(self, label: Callable[[str], str]) -> None: ...
