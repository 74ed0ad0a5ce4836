"""R19 of issue 16: WebRTC media security on the PBX's own Asterisk.

- A browser phone's endpoint (``webrtc = yes``: DTLS-SRTP, ICE, AVPF) refuses an offer
  of plain RTP, or of SDES keys, made over its SIP WebSocket with the right credentials:
  media in the clear never reaches an agent's browser leg. A proper DTLS offer from the
  same account is taken, so the refusals are about the media, not the account.
- A stray DTLS ClientHello (and broken DTLS records) at Asterisk's media port while a
  WebRTC call sets its DTLS up (the class of CVE-2023-49786), and at every RTP port while a
  caller talks to the AI: Asterisk neither crashes nor drops either call.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.calls import CallState
from pbx import runtime
from pbx.asterisk_config import SipAgent
from pbx.runtime import AsteriskInstance
from tests.integration.asterisk_helpers import ari, assert_quiet
from tests.sip_torture import SipProbe, Target
from tests.waiting import until
from web.bench.rig import Pair, rig
from web.bench.world import World, local_world

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

USER, PASSWORD = "web-tess", "web-tess-secret"
CRLF = "\r\n"


@pytest_asyncio.fixture(scope="module")
async def webrtc_pbx(
    installation: runtime.Installation, state_dir: Path,
) -> AsyncIterator[AsteriskInstance]:
    instance = runtime.new_instance(installation, f"w19-{os.getpid()}", state_dir,
                                    agents=(SipAgent(USER, PASSWORD, "webrtc", "Tess"),))
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


def _offer(profile: str, *extra: str) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0",
             f"m=audio 40000 {profile} 0", "c=IN IP4 127.0.0.1", "a=rtpmap:0 PCMU/8000",
             "a=sendrecv", *extra]
    return CRLF.join(lines) + CRLF


FINGERPRINT = ":".join(f"{b:02X}" for b in secrets.token_bytes(32))
DTLS_OFFER = _offer(
    "UDP/TLS/RTP/SAVPF", "a=mid:0", "a=rtcp-mux", "a=setup:actpass",
    f"a=fingerprint:sha-256 {FINGERPRINT}", "a=ice-ufrag:r19ufrag",
    "a=ice-pwd:r19icepasswordr19icepassword",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host")


def client_hello(length_lie: int | None = None) -> bytes:
    """A DTLS 1.2 ClientHello record as a browser's first flight starts (RFC 6347 4.2.2),
    optionally lying about its lengths."""
    body = (b"\xfe\xfd" + secrets.token_bytes(32) + b"\x00" + b"\x00"  # version, random,
            + b"\x00\x04\xc0\x2b\xc0\x2f" + b"\x01\x00"  # session, cookie, suites, null
            + b"\x00\x00")  # no extensions
    handshake = (b"\x01" + struct.pack("!I", length_lie or len(body))[1:] + b"\x00\x00"
                 + b"\x00\x00\x00" + struct.pack("!I", len(body))[1:] + body)
    return (b"\x16\xfe\xff" + b"\x00\x00" + b"\x00" * 6
            + struct.pack("!H", length_lie or len(handshake)) + handshake)


STRAY = [client_hello(), client_hello(0xFFFF), client_hello(1), client_hello()[:13],
         b"\x16\xfe\xfd" + b"\xff" * 10, b"\x17\xfe\xfd" + secrets.token_bytes(200),
         b"\x15\xfe\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x02\x28"]


async def _spray(ports: range, rounds: int = 3) -> None:
    """Every stray record to every port, from a socket of its own (another host's)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.66", 0))
    try:
        for _ in range(rounds):
            for port in ports:
                for record in STRAY:
                    transport.sendto(record, ("127.0.0.1", port))
            await asyncio.sleep(0)  # let the loop flush between rounds
    finally:
        transport.close()


def _ws(instance: AsteriskInstance) -> tuple[Target, str]:
    http = instance.spec.ports.http
    return (Target("127.0.0.1", http, "tess.invalid", 0, transport="WS"),
            f"ws://127.0.0.1:{http}/ws")


async def test_a_browser_phones_endpoint_refuses_media_without_dtls(
    webrtc_pbx: AsteriskInstance,
) -> None:
    target, url = _ws(webrtc_pbx)
    async with SipProbe(target, url) as tab:
        plain = await tab.authenticated_invite(USER, PASSWORD, "*43", _offer("RTP/AVP"))
        sdes = await tab.authenticated_invite(USER, PASSWORD, "*43", _offer(
            "RTP/SAVP", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{'A' * 40}"))
        dtls = await tab.authenticated_invite(USER, PASSWORD, "*43", DTLS_OFFER)
    print(f"\nplain RTP: {plain.status}, SDES: {sdes.status}, DTLS: {dtls.status}")
    assert plain.status == 488 and sdes.status == 488
    assert dtls.status == 200  # the same account, a browser's offer: taken (then hung up)
    await assert_quiet(webrtc_pbx)


async def test_a_stray_dtls_hello_during_a_webrtc_calls_setup_is_ignored(
    webrtc_pbx: AsteriskInstance,
) -> None:
    pid = webrtc_pbx.pid
    target, url = _ws(webrtc_pbx)
    async with SipProbe(target, url) as tab:
        # The call is answered and stays up: Asterisk now waits for the DTLS handshake
        # (and ICE) from the browser that offered; what comes instead is the spray.
        answer = await tab.authenticated_invite(USER, PASSWORD, "*43", DTLS_OFFER,
                                                keep=True)
        assert answer.status == 200
        media = re.search(r"^m=audio (\d+) ", answer.body.decode(), re.M)
        assert media is not None
        port = int(media[1])
        await _spray(range(port, port + 1), rounds=20)
        _, channels = await ari(webrtc_pbx, "GET", "/channels")
        assert [c["name"].rsplit("-", 1)[0] for c in channels] == [f"PJSIP/{USER}"]
        await tab.still_answers()
        await tab.hang_up(answer)
    assert webrtc_pbx.pid == pid and webrtc_pbx.running
    await assert_quiet(webrtc_pbx)


async def test_stray_dtls_hellos_at_every_rtp_port_leave_a_callers_call_alone(
    quiet_pair: Pair, world: World, tmp_path: Path,
) -> None:
    pbx = quiet_pair.pbx
    pid = pbx.pid
    async with rig(pbx, world, tmp_path / "db.sqlite") as r:
        placed = await r.place_call()
        await r.wait_hears(placed, "ai")
        await _spray(range(pbx.spec.ports.rtp_start, pbx.spec.ports.rtp_end + 1))
        sprayed = time.monotonic()
        await r.wait_hears(placed, "ai", after=sprayed)
        async with r.store.transaction() as tx:
            assert (await tx.calls.get(placed.call_id)).state is CallState.WITH_AI
        assert pbx.pid == pid and pbx.running
        await r.hang_up_caller(placed)
        await until(lambda: r.control.calls.get(placed.call_id) is None)
