"""The controller's links to a real Asterisk carry garbage, or drop under an action (R4,
R5 of issue 16): garbage is counted on /metrics and skipped, later events and calls go on;
an action whose link drops fails at once with a clear error, is never replayed, and the
client reconnects by itself. The faults are the harness's (tests.faults.TcpPath)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.calls import CallOutcome, CallState
from pbx.ami import AmiClient, AmiMessage, AmiUnavailable
from pbx.event_link import EventStats
from tests.faults import TcpPath, scraped
from tests.integration.asterisk_helpers import Pair, ami_client
from tests.waiting import until
from web.bench.rig import rig
from web.bench.world import World, local_world

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


def ws_text(payload: bytes) -> bytes:
    """One unmasked WebSocket text frame, as a server sends it."""
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


# ---- R4: garbage on the links ---------------------------------------------------------------


async def test_garbage_and_unknown_types_on_the_ari_socket_are_counted_and_calls_go_on(
    quiet_pair: Pair, world: World, tmp_path: Path
) -> None:
    async with TcpPath(quiet_pair.pbx.spec.ports.http) as path, \
            rig(quiet_pair.pbx, world, tmp_path / "db.sqlite", ari_url=path.url()) as r:
        before = scraped(ari=r.pbx_ari)
        assert before["bad_frames{ari}"] == before["unknown_events{ari}"] == 0
        errors = r.pbx_ari.stats.errors
        for frame in (b"this is not JSON", b'["an array, not an event"]',
                      b'{"type": "NoSuchEventType", "application": "switchboard"}'):
            await path.inject(ws_text(frame), into="GET /ari/events")
        await until(lambda: scraped(ari=r.pbx_ari)["unknown_events{ari}"] == 1)
        after = scraped(ari=r.pbx_ari)
        assert after["bad_frames{ari}"] == 2
        assert after["connected{ari}"] == 1  # skipped, not a reason to reconnect
        assert r.pbx_ari.stats.errors == errors
        # Later events are handled: a whole call, answered by the AI, ends with its outcome.
        placed = await r.place_call()
        await r.wait_hears(placed, "ai", after=time.monotonic())
        await r.hang_up_caller(placed)

        async def ended() -> CallOutcome | None:
            async with r.store.transaction() as tx:
                call = await tx.calls.get(placed.call_id)
            return call.outcome if call.state is CallState.ENDED else None

        assert await until(ended) is CallOutcome.COMPLETED_BY_AI
        assert r.pbx_ari.stats.connects == 1


def user_events_heard(ami: AmiClient) -> list[str]:
    """The names of the UserEvents ``ami`` hears from now on, in order."""
    heard: list[str] = []

    async def on_user_event(event: AmiMessage) -> None:
        heard.append(str(event["UserEvent"]))

    ami.on("UserEvent", on_user_event)
    return heard


async def test_garbage_on_the_ami_link_is_counted_and_later_events_still_flow(
    quiet_pair: Pair,
) -> None:
    async with TcpPath(quiet_pair.pbx.spec.ports.ami) as path, \
            ami_client(quiet_pair.pbx, port=path.port) as ami:
        heard = user_events_heard(ami)
        await ami.wait_ready(10)
        assert scraped(ami=ami)["bad_frames{ami}"] == 0
        for block in (
            b"\x00\xff\xfe binary noise, no header at all\r\n\r\n",
            # An event type nobody handles: AMI's list is open-ended (every module adds
            # its own), so it is valid, and skipped without a trace.
            b"Event: NoSuchEventType\r\nPrivilege: call,all\r\n\r\n",
            # A message with a line that is not a header: counted, its headers kept.
            b"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: injected\r\n"
            b"this line is no header\r\n\r\n",
        ):
            await path.inject(block, boundary=b"\r\n\r\n")
        await ami.send_action({"Action": "UserEvent", "UserEvent": "after-the-garbage"})
        await until(lambda: len(heard) == 2, within=10, why=lambda: f"heard {heard}")
        assert heard == ["injected", "after-the-garbage"]
        figures = scraped(ami=ami)
        assert figures["bad_frames{ami}"] == 2
        assert figures["connected{ami}"] == 1 and figures["errors{ami}"] == 0
        assert ami.stats.connects == 1


# ---- R5: AMI drops mid-action ---------------------------------------------------------------


async def test_an_ami_action_whose_link_drops_fails_at_once_and_is_never_replayed(
    quiet_pair: Pair,
) -> None:
    # A long action timeout: an action that fails must fail because the link dropped,
    # not because its wait ran out.
    async with TcpPath(quiet_pair.pbx.spec.ports.ami) as path, \
            ami_client(quiet_pair.pbx, port=path.port, action_timeout=120) as ami:
        heard = user_events_heard(ami)
        await ami.wait_ready(10)
        stats: EventStats = ami.stats
        path.black_hole()
        sent = path.sent
        # UserEvent is no query: run twice, it is seen twice. Had it reached Asterisk,
        # or were it replayed after the reconnect, it would be heard.
        action = asyncio.create_task(
            ami.send_action({"Action": "UserEvent", "UserEvent": "lost-with-the-link"}))
        await until(lambda: path.sent > sent, why="the action never left the client")
        await path.cut()
        with pytest.raises(AmiUnavailable, match="link dropped before the answer"):
            await asyncio.wait_for(action, 30)
        # While the link is down, an action fails at once too, saying so.
        with pytest.raises(AmiUnavailable):
            await asyncio.wait_for(ami.send_action({"Action": "Ping"}), 30)
        path.restore()
        await until(lambda: ami.status == "connected" and stats.connects == 2, within=30)
        await ami.send_action({"Action": "UserEvent", "UserEvent": "after-the-reconnect"})
        # AMI's events come in order: a replay would be heard before this one.
        await until(lambda: heard, within=10)
        assert heard == ["after-the-reconnect"]
        assert path.accepted == 2
