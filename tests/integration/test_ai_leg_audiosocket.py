"""The AI leg's media contract on a real Asterisk: AudioSocket audio both ways and the
caller's DTMF reaching the engine through the call bridge."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from pbx.audiosocket import AudioSocketServer, AudioSocketSession, Kind
from tests.integration.asterisk_helpers import EventListener, Pair, add_to_bridge, ari, of_type
from tests.waiting import until
from web.bench.audio import AI_HZ, FRAME, label, open_probe, tone

pytestmark = pytest.mark.integration


async def test_ai_engine_hears_the_caller_and_gets_dtmf_over_audiosocket(
    quiet_pair: Pair,
) -> None:
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    engine = AudioSocketServer()
    await engine.start()
    stream_id = uuid.uuid4()
    heard: list[str | None] = []
    digits: list[str] = []
    engine_done = asyncio.Event()

    async def ai(session: AudioSocketSession) -> None:
        speaking = asyncio.create_task(session.play(tone(AI_HZ, 3.0).tobytes()))
        try:
            async for frame in session.frames():
                if frame.kind == Kind.AUDIO:
                    samples = np.frombuffer(frame.payload, dtype=np.int16)
                    if len(samples) == FRAME:
                        heard.append(label(samples))
                elif frame.kind == Kind.DTMF:
                    digits.append(frame.payload.decode())
        finally:
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)
            engine_done.set()

    engine.expect(stream_id, ai)
    caller_probe = await open_probe(send_hz=450.0)
    async with EventListener(pbx, "switchboard") as pbx_events, EventListener(
        carrier, "carrier"
    ) as carrier_events:
        _, outbound = await ari(
            carrier, "POST", "/channels", endpoint="PJSIP/2000@switchboard", app="carrier"
        )
        start = await pbx_events.wait_for(of_type("StasisStart"))
        caller = start["channel"]["id"]
        await ari(pbx, "POST", f"/channels/{caller}/answer")
        _, bridge = await ari(pbx, "POST", "/bridges", type="mixing")
        _, ai_leg = await ari(
            pbx,
            "POST",
            "/channels/externalMedia",
            app="switchboard",
            external_host=engine.address,
            encapsulation="audiosocket",
            transport="tcp",
            format="slin",
            data=str(stream_id),
        )
        await add_to_bridge(pbx, bridge["id"], caller)
        await add_to_bridge(pbx, bridge["id"], ai_leg["id"])

        # The carrier side: the caller's phone is an RTP probe sending the caller tone.
        await carrier_events.wait_for(of_type("StasisStart", channel__id=outbound["id"]))
        _, phone_bridge = await ari(carrier, "POST", "/bridges", type="mixing")
        _, phone = await ari(
            carrier,
            "POST",
            "/channels/externalMedia",
            app="carrier",
            external_host=f"127.0.0.1:{caller_probe.port}",
            format="ulaw",
        )
        rtp_port = int(phone["channelvars"]["UNICASTRTP_LOCAL_PORT"])
        caller_probe.start_sending(("127.0.0.1", rtp_port))
        await add_to_bridge(carrier, phone_bridge["id"], f"{outbound['id']},{phone['id']}")
        # Both ways, waited for (bounded) rather than slept on: a loaded machine may take
        # a moment to get the media going; it must then flow.
        await until(lambda: heard.count("caller") > 20
                    and [r.who for r in caller_probe.received].count("ai") > 20, 10,
                    why=lambda: f"AI heard {heard[-30:]}")
        await ari(carrier, "POST", f"/channels/{outbound['id']}/dtmf", dtmf="0")
        await until(lambda: bool(digits), 5, why="no DTMF reached the engine")
        # Nothing more arrives (the digit is not delivered twice): AudioSocket marks no
        # end of the digits, so the test listens for a while.
        await asyncio.sleep(0.3)
        assert digits == ["0"]

        for channel in (caller, ai_leg["id"]):
            await ari(pbx, "DELETE", f"/channels/{channel}")
        await ari(pbx, "DELETE", f"/bridges/{bridge['id']}")
        await ari(carrier, "DELETE", f"/channels/{phone['id']}")
        await ari(carrier, "DELETE", f"/bridges/{phone_bridge['id']}")
        await carrier_events.wait_for(of_type("ChannelDestroyed", channel__id=outbound["id"]))
    await asyncio.wait_for(engine_done.wait(), 5)
    await caller_probe.close()
    await engine.close()
