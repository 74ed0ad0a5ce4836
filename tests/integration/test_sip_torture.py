"""R18 of issue 16: malformed SIP and SDP (RFC 4475's torture messages and PROTOS-like
anomalies, tests.sip_torture) sent to the PBX's own Asterisk over UDP and over its SIP
WebSocket (TCP), while a call is up. Asterisk answers each with an error or drops it,
never restarts or stops answering; the call goes on untouched, the controller's link is
not disturbed, and nothing is left: no channel, no connection, no descriptor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.calls import CallState
from tests.sip_torture import SipProbe, Target, torture_messages, torture_sdps
from tests.waiting import until
from web.bench.rig import DESK_PHONE_PASSWORD, DESK_PHONE_SIP_USER, Pair, rig
from web.bench.world import World, local_world

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

# Where the torture comes from: an address of its own (127.0.0.0/8 is all local), so
# that nothing it provokes touches the carrier's or the phones' addresses.
TORTURER = "127.0.0.77"


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _torture_over_websocket(pair: Pair) -> int:
    """Every message over the PBX's SIP WebSocket; a connection the PBX closes (its
    answer to some garbage) is replaced. Returns how many connections it took."""
    http = pair.pbx.spec.ports.http
    url = f"ws://127.0.0.1:{http}/ws"
    cases = torture_messages(Target("127.0.0.1", http, "torture.invalid", 0, transport="WS"))
    connections = 0
    async with contextlib.AsyncExitStack() as stack:
        probe: SipProbe | None = None
        for case in cases:
            if probe is None or probe.closed:
                if probe is not None:
                    await probe.__aexit__(None, None, None)
                probe = SipProbe(Target("127.0.0.1", http, "torture.invalid", 0, "WS"), url)
                await probe.__aenter__()
                connections += 1
            await probe.send(case.data)
        if probe is not None:
            stack.push_async_exit(probe.__aexit__)
            if probe.closed:
                return connections
            await probe.still_answers()
    # A fresh connection is served: the transport still takes browsers.
    async with SipProbe(Target("127.0.0.1", http, "torture.invalid", 0, "WS"), url) as probe:
        await probe.still_answers()
    return connections


async def test_malformed_sip_over_udp_and_websocket_is_refused_or_dropped_and_a_call_goes_on(
    quiet_pair: Pair, world: World, tmp_path: Path,
) -> None:
    pbx = quiet_pair.pbx
    pid = pbx.pid
    assert pid is not None
    async with rig(pbx, world, tmp_path / "db.sqlite") as r:
        placed = await r.place_call()
        await r.wait_hears(placed, "ai")
        connects = r.pbx_ari.stats.connects
        descriptors = _descriptors(pid)
        udp = Target("127.0.0.1", pbx.spec.ports.sip, TORTURER, 0)
        async with SipProbe(udp) as probe:
            cases = torture_messages(udp)
            for case in cases:
                await probe.send(case.data)
                try:  # the next OPTIONS is answered: that message did not stop it
                    await probe.still_answers()
                except TimeoutError:
                    raise AssertionError(f"the PBX stopped answering after {case.name}") from None
        connections = await _torture_over_websocket(quiet_pair)
        print(f"\n{len(cases)} malformed messages over UDP, the same over "
              f"{connections} WebSocket connection(s)")
        # SIP over plain TCP is not offered at all: nothing listens there.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", pbx.spec.ports.sip)
        # The same Asterisk, the controller's link never dropped, the call still with its AI.
        assert pbx.pid == pid and pbx.running
        assert r.pbx_ari.stats.connects == connects and r.pbx_ari.status == "connected"
        async with r.store.transaction() as tx:
            assert (await tx.calls.get(placed.call_id)).state is CallState.WITH_AI
        await r.wait_hears(placed, "ai", after=time.monotonic())
        # Nothing it opened stays open (the torture's connections, transactions' sockets).
        await until(lambda: _descriptors(pid) <= descriptors, within=15,
                    why=lambda: f"Asterisk holds {_descriptors(pid)} descriptors, "
                                f"{descriptors} before")
        await r.hang_up_caller(placed)
        await until(lambda: r.control.calls.get(placed.call_id) is None)


async def test_malformed_sdp_from_an_authenticated_phone_is_refused_or_negotiated(
    quiet_pair: Pair,
) -> None:
    # Credentials first: an INVITE nobody vouches for is challenged before its body is
    # read, so only a known phone's offer reaches Asterisk's SDP parser. *43 is the echo
    # test, the one number an agent's phone may dial.
    pbx = quiet_pair.pbx
    pid = pbx.pid
    answers: dict[str, int] = {}
    async with SipProbe(Target("127.0.0.1", pbx.spec.ports.sip, TORTURER, 0)) as probe:
        for name, body in torture_sdps():
            try:
                answer = await probe.authenticated_invite(
                    DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, "*43", body)
                await probe.still_answers()
            except TimeoutError:
                raise AssertionError(f"the PBX stopped answering after {name}") from None
            answers[name] = answer.status
    print(f"\nanswers: {answers}")
    assert pbx.pid == pid and pbx.running
    # An offer with nothing Asterisk can use is refused, never answered.
    for name in ("no_media_line", "not_sdp_at_all", "video_only", "declined_only",
                 "port_past_65535"):
        assert answers[name] >= 400, (name, answers[name])
