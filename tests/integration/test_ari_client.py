"""The ARI client against the real Asterisk 22 pair: a call from the carrier enters
Stasis on the PBX, is bridged and torn down; the event socket is cut and comes back;
Asterisk's refusals arrive as typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pbx.ari import (
    AriBadRequest,
    AriClient,
    AriNotFound,
    AriServerError,
    AriUnprocessable,
    Event,
)
from pbx.runtime import AsteriskInstance
from tests.integration.asterisk_helpers import Pair, of_type

pytestmark = pytest.mark.integration


def ari_client(instance: AsteriskInstance, app: str = "", **options: Any) -> AriClient:
    user, password = instance.ari_auth
    return AriClient(instance.ari_url, user, password, app, **options)


class Recorder:
    """Every event one client dispatched, in dispatch order, waitable by predicate."""

    def __init__(self, client: AriClient) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        client.on("*", self._record)

    async def _record(self, event: Event) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10) -> Event:
        def found() -> Event | None:
            return next((e for e in self.events if predicate(e)), None)

        async with asyncio.timeout(timeout), self._changed:
            event = await self._changed.wait_for(found)
        assert event is not None
        return event

    def types_for_channel(self, channel_id: str) -> list[str]:
        return [e["type"] for e in self.events if e.get("channel", {}).get("id") == channel_id]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def place_inbound_call(carrier: AriClient, pbx_events: Recorder) -> tuple[str, str]:
    """Carrier dials 2000 over the trunk; returns (carrier leg id, PBX leg id)."""
    outbound = await carrier.channels.originate(
        "PJSIP/2000@switchboard", app="carrier", channel_id=new_id("carrier")
    )
    start = await pbx_events.wait_for(of_type("StasisStart"))
    return outbound["id"], start["channel"]["id"]


async def test_inbound_call_is_answered_bridged_and_hung_up_leaving_nothing(
    quiet_pair: Pair,
) -> None:
    async with (
        ari_client(quiet_pair.pbx, "switchboard") as pbx,
        ari_client(quiet_pair.carrier, "carrier") as carrier,
    ):
        pbx_events, carrier_events = Recorder(pbx), Recorder(carrier)
        await pbx.wait_ready(10)
        await carrier.wait_ready(10)

        carrier_leg, leg = await place_inbound_call(carrier, pbx_events)
        start = await pbx_events.wait_for(of_type("StasisStart", channel__id=leg))
        assert start["args"] == ["inbound", "receptionist", "2000"]

        await pbx.channels.answer(leg)
        # The carrier's leg enters its own app only once the PBX has answered it.
        await carrier_events.wait_for(of_type("StasisStart", channel__id=carrier_leg))
        assert (await pbx.channels.get(leg))["state"] == "Up"

        bridge = await pbx.bridges.create(bridge_id=new_id("call"), type="mixing")
        assert bridge["bridge_type"] == "mixing"
        await pbx.bridges.add_channel(
            bridge["id"], leg, role="caller", inhibit_connected_line_updates=True
        )
        await pbx_events.wait_for(
            of_type("ChannelEnteredBridge", channel__id=leg, bridge__id=bridge["id"])
        )
        assert (await pbx.bridges.get(bridge["id"]))["channels"] == [leg]

        await pbx.bridges.remove_channel(bridge["id"], leg)
        await pbx_events.wait_for(of_type("ChannelLeftBridge", channel__id=leg))
        await pbx.bridges.destroy(bridge["id"])
        # Destruction completes asynchronously in Asterisk: within a moment it is gone.
        async with asyncio.timeout(5):
            while True:
                try:
                    await pbx.bridges.get(bridge["id"])
                except AriNotFound:
                    break
                await asyncio.sleep(0.02)

        await pbx.channels.hangup(leg, reason="normal")
        await pbx_events.wait_for(of_type("StasisEnd", channel__id=leg))
        await carrier_events.wait_for(of_type("StasisEnd", channel__id=carrier_leg))

        flow = pbx_events.types_for_channel(leg)
        milestones = ["StasisStart", "ChannelEnteredBridge", "ChannelLeftBridge", "StasisEnd"]
        assert [t for t in flow if t in milestones] == milestones
        assert pbx.stats.errors == 0
        assert pbx.stats.bad_frames == 0


async def test_cut_event_socket_reconnects_and_reconciles_the_parked_call(
    quiet_pair: Pair,
) -> None:
    seen_in_stasis: list[list[str]] = []
    lost: asyncio.Queue[str] = asyncio.Queue()

    async def on_disconnect(reason: str) -> None:
        lost.put_nowait(reason)

    async with (
        ari_client(quiet_pair.pbx, "switchboard", on_disconnect=on_disconnect) as pbx,
        ari_client(quiet_pair.carrier, "carrier") as carrier,
    ):

        async def reconcile() -> None:
            # What the controller does on every (re)connect: ask Asterisk which legs
            # are still parked in our app, since events during the outage are lost.
            app = await pbx.applications.get("switchboard")
            seen_in_stasis.append(app["channel_ids"])

        pbx.on_connect = reconcile
        pbx_events, carrier_events = Recorder(pbx), Recorder(carrier)
        await pbx.wait_ready(10)
        await carrier.wait_ready(10)
        carrier_leg, leg = await place_inbound_call(carrier, pbx_events)
        await pbx.channels.answer(leg)

        out = await quiet_pair.pbx.cli("ari shutdown websocket sessions")
        assert "rror" not in out, out
        assert "closed by Asterisk" in await asyncio.wait_for(lost.get(), 10)
        await pbx.wait_ready(10)

        assert len(seen_in_stasis) == 2
        assert leg in seen_in_stasis[1]  # the caller stayed parked while we were away
        assert pbx.status == "connected"

        await pbx.channels.hangup(leg)
        await pbx_events.wait_for(of_type("StasisEnd", channel__id=leg))  # new socket
        await carrier_events.wait_for(of_type("StasisEnd", channel__id=carrier_leg))


async def test_adding_unknown_channel_or_to_unknown_bridge_gives_typed_errors(
    quiet_pair: Pair,
) -> None:
    async with ari_client(quiet_pair.pbx) as pbx:
        bridge = await pbx.bridges.create(bridge_id=new_id("call"))
        try:
            with pytest.raises(AriBadRequest, match="Channel not found") as caught:
                await pbx.bridges.add_channel(bridge["id"], "no-such-channel")
            assert caught.value.status == 400
            assert caught.value.path == f"/bridges/{bridge['id']}/addChannel"
            with pytest.raises(AriNotFound, match="Bridge not found"):
                await pbx.bridges.add_channel("no-such-bridge", "no-such-channel")
        finally:
            await pbx.bridges.destroy(bridge["id"])


async def test_adding_a_channel_outside_stasis_is_unprocessable(quiet_pair: Pair) -> None:
    # A carrier leg running dialplan (not Stasis) stands for a channel bridged by Dial().
    # The PBX app holds the call unanswered so that the leg stays up for the attempt.
    async with (
        ari_client(quiet_pair.pbx, "switchboard") as pbx,
        ari_client(quiet_pair.carrier) as carrier,
    ):
        pbx_events = Recorder(pbx)
        await pbx.wait_ready(10)
        leg = await carrier.channels.originate(
            "PJSIP/2000@switchboard", context="agents", extension="*43", priority=1
        )
        start = await pbx_events.wait_for(of_type("StasisStart"))
        bridge = await carrier.bridges.create(bridge_id=new_id("call"))
        try:
            with pytest.raises(AriUnprocessable, match="not in Stasis"):
                await carrier.bridges.add_channel(bridge["id"], leg["id"])
        finally:
            await carrier.bridges.destroy(bridge["id"])
            await pbx.channels.hangup(start["channel"]["id"])
            await pbx_events.wait_for(of_type("StasisEnd"))


async def test_shell_read_through_ari_is_refused(quiet_pair: Pair) -> None:
    async with ari_client(quiet_pair.pbx, "switchboard") as pbx:
        events = Recorder(pbx)
        await pbx.wait_ready(10)
        leg = await pbx.channels.external_media_rtp(
            "switchboard", "127.0.0.1:9", channel_id=new_id("ai")
        )
        try:
            await events.wait_for(of_type("StasisStart", channel__id=leg["id"]))
            await pbx.channels.set_variable(leg["id"], "SB_CALL", "call-1")
            assert await pbx.channels.get_variable(leg["id"], "SB_CALL") == "call-1"
            # Refused twice over: func_shell is not in the module list, and even loaded it
            # is blocked for ARI/AMI by live_dangerously=no. Both answer 500.
            with pytest.raises(AriServerError, match="Unable to read provided function"):
                await pbx.channels.get_variable(leg["id"], "SHELL(id)")
        finally:
            await pbx.channels.hangup(leg["id"])


async def test_media_legs_for_the_ai_and_a_supervisor_snoop(quiet_pair: Pair) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def audiosocket_engine(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The first AudioSocket frame names the session: kind 0x01, length 16, UUID.
        received.put_nowait(await reader.readexactly(3 + 16))
        writer.close()

    engine = await asyncio.start_server(audiosocket_engine, "127.0.0.1", 0)
    port = engine.sockets[0].getsockname()[1]
    session = uuid.uuid4()
    async with ari_client(quiet_pair.pbx, "switchboard") as pbx:
        events = Recorder(pbx)
        await pbx.wait_ready(10)
        ai = await pbx.channels.external_media_audiosocket(
            "switchboard", f"127.0.0.1:{port}", str(session), channel_id=new_id("ai")
        )
        frame = await asyncio.wait_for(received.get(), 10)
        assert frame[:3] == b"\x01\x00\x10" and frame[3:] == session.bytes

        rtp = await pbx.channels.external_media_rtp(
            "switchboard", "127.0.0.1:9", channel_id=new_id("rtp")
        )
        assert rtp.get("channelvars", {}).get("UNICASTRTP_LOCAL_PORT")
        snoop = await pbx.channels.snoop(
            rtp["id"], "switchboard", spy="both", whisper="out", snoop_id=new_id("snoop")
        )
        await events.wait_for(of_type("StasisStart", channel__id=snoop["id"]))
        playback = await pbx.channels.play(rtp["id"], "tone:ring", playback_id=new_id("pb"))
        await events.wait_for(of_type("PlaybackStarted", playback__id=playback["id"]))
        await pbx.playbacks.stop(playback["id"])
        for leg in (snoop, rtp, ai):
            # The AI leg may already be gone: it ends when the engine closes its socket.
            with contextlib.suppress(AriNotFound):
                await pbx.channels.hangup(leg["id"])
        for leg in (snoop, rtp, ai):
            await events.wait_for(of_type("StasisEnd", channel__id=leg["id"]))
    engine.close()
    await engine.wait_closed()
