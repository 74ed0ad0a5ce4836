"""The ARI client against a fake ARI server (aiohttp test server): REST errors, event
ordering and isolation, reconnects. Real-Asterisk behaviour is in tests/integration."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from pbx.ari import (
    AriBadRequest,
    AriClient,
    AriConflict,
    AriError,
    AriNotFound,
    AriServerError,
    AriUnauthorized,
    AriUnavailable,
    AriUnprocessable,
    Event,
    event_key,
)
from tests.waiting import until

USER, PASSWORD = "switchboard", "s3cret"
EXPECTED_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    raw_path: str


@dataclass
class FakeAri:
    """Just enough of Asterisk's HTTP server: canned REST replies and /ari/events."""

    replies: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    sockets: asyncio.Queue[web.WebSocketResponse] = field(default_factory=asyncio.Queue)
    refuse_events: bool = False
    answer_pings: bool = True
    pings: int = 0
    """Pings received from the client, answered or not."""
    url: str = ""
    event_attempts: list[str] = field(default_factory=list)
    """The ``app`` parameter of every /ari/events handshake."""
    attempted: asyncio.Queue[None] = field(default_factory=asyncio.Queue)

    async def events(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != EXPECTED_AUTH:
            return web.json_response({"message": "Authentication required"}, status=401)
        self.event_attempts.append(request.query["app"])
        self.attempted.put_nowait(None)
        if self.refuse_events:
            return web.Response(status=503, text="Service Unavailable")
        assert request.query["subscribeAll"] == "false"
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self.sockets.put_nowait(ws)
        async for message in ws:
            if message.type is WSMsgType.PING:
                self.pings += 1
                if self.answer_pings:
                    await ws.pong(message.data)
        return ws

    async def rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            Request(
                request.method,
                path,
                dict(request.query),
                body,
                request.headers.get("Authorization"),
                request.raw_path,
            )
        )
        status, reply = self.replies.get((request.method, path), (204, None))
        if reply is None:
            return web.Response(status=status)
        if isinstance(reply, str):
            return web.Response(status=status, text=reply)
        return web.json_response(reply, status=status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ari/events", self.events)
        app.router.add_route("*", "/ari/{tail:.*}", self.rest)
        return app


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeAri]:
    fake = FakeAri()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/ari"))
    yield fake
    await server.close()


def make_client(fake: FakeAri, **options: Any) -> AriClient:
    options.setdefault("apps", "switchboard")
    options.setdefault("backoff_initial", 0.01)
    options.setdefault("backoff_max", 0.05)
    return AriClient(fake.url, USER, PASSWORD, **options)


def channel_event(kind: str, channel_id: str, **extra: Any) -> Event:
    return {"type": kind, "application": "switchboard", "channel": {"id": channel_id}, **extra}


async def within(seconds: float, awaitable: Any) -> Any:
    async with asyncio.timeout(seconds):
        return await awaitable


class LogSignal(logging.Handler):
    """Sets ``seen`` when a log line containing ``text`` is emitted: a wait without polling."""

    def __init__(self, logger: str, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()
        self._logger = logging.getLogger(logger)

    def __enter__(self) -> LogSignal:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


# ---- REST ---------------------------------------------------------------------------------


async def test_rest_call_sends_basic_auth_and_typed_parameters(fake: FakeAri) -> None:
    async with make_client(fake, apps=()) as ari:
        await ari.bridges.add_channel(
            "call-1", ["c1", "c2"], role="agent", absorb_dtmf=True, mute=False
        )
    [request] = fake.requests
    assert request.authorization == EXPECTED_AUTH
    assert (request.method, request.path) == ("POST", "/bridges/call-1/addChannel")
    assert request.query == {
        "channel": "c1,c2",
        "role": "agent",
        "absorbDTMF": "true",
        "mute": "false",
    }


async def test_create_channel_passes_originator_and_variables_in_the_body(fake: FakeAri) -> None:
    fake.replies[("POST", "/channels/create")] = (200, {"id": "agent-1", "name": "PJSIP/a-1"})
    async with make_client(fake, apps=()) as ari:
        channel = await ari.channels.create(
            "PJSIP/agent1",
            "switchboard",
            app_args=["agent", "call-1"],
            channel_id="agent-1",
            originator="caller-1",
            variables={"CALLERID(name)": "Ada"},
        )
    assert channel["id"] == "agent-1"
    [request] = fake.requests
    assert request.query == {
        "endpoint": "PJSIP/agent1",
        "app": "switchboard",
        "appArgs": "agent,call-1",
        "channelId": "agent-1",
        "originator": "caller-1",
    }
    assert request.body == {"variables": {"CALLERID(name)": "Ada"}}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, AriBadRequest),
        (401, AriUnauthorized),
        (404, AriNotFound),
        (409, AriConflict),
        (422, AriUnprocessable),
        (500, AriServerError),
    ],
)
async def test_http_error_becomes_typed_error_naming_method_path_and_reason(
    fake: FakeAri, status: int, error: type[AriError]
) -> None:
    fake.replies[("POST", "/bridges/call-1/addChannel")] = (
        status,
        {"message": "Channel not in Stasis application"},
    )
    async with make_client(fake, apps=()) as ari:
        with pytest.raises(error) as caught:
            await ari.bridges.add_channel("call-1", "caller-1")
    assert caught.value.status == status
    assert caught.value.method == "POST"
    assert caught.value.path == "/bridges/call-1/addChannel"
    assert caught.value.message == "Channel not in Stasis application"
    assert str(caught.value) == (
        f"ARI POST /bridges/call-1/addChannel -> {status}: Channel not in Stasis application"
    )


async def test_error_body_using_error_key_or_plain_text_still_explains(fake: FakeAri) -> None:
    fake.replies[("POST", "/channels/create")] = (500, {"error": "Allocation failed"})
    fake.replies[("GET", "/channels/x")] = (404, "no such thing")
    async with make_client(fake, apps=()) as ari:
        with pytest.raises(AriServerError, match="Allocation failed"):
            await ari.channels.create("PJSIP/nobody", "switchboard")
        with pytest.raises(AriNotFound, match="no such thing"):
            await ari.channels.get("x")


async def test_ids_are_quoted_as_one_path_segment(fake: FakeAri) -> None:
    async with make_client(fake, apps=()) as ari:
        await ari.channels.hangup("odd/id?", reason="busy")
    [request] = fake.requests
    assert request.path == "/channels/odd/id?"
    assert request.raw_path.startswith("/ari/channels/odd%2Fid%3F?")  # one segment on the wire
    assert request.query == {"reason": "busy"}


async def test_unreachable_asterisk_raises_unavailable_with_status_zero() -> None:
    async with AriClient("http://127.0.0.1:9/ari", USER, PASSWORD) as ari:
        with pytest.raises(AriUnavailable) as caught:
            await ari.asterisk.info()
    assert caught.value.status == 0
    assert "GET /asterisk/info" in str(caught.value)


async def test_app_argument_with_comma_is_refused_before_asterisk_splits_it(
    fake: FakeAri,
) -> None:
    async with make_client(fake, apps=()) as ari:
        with pytest.raises(ValueError, match="comma"):
            await ari.channels.originate("PJSIP/x", app="switchboard", app_args=["a,b"])
    assert fake.requests == []


def test_event_key_orders_playbacks_with_their_channel() -> None:
    playback = {"type": "PlaybackFinished", "playback": {"target_uri": "channel:c1"}}
    assert event_key(playback) == event_key(channel_event("StasisEnd", "c1")) == "channel:c1"
    assert event_key({"type": "BridgeDestroyed", "bridge": {"id": "b1"}}) == "bridge:b1"
    assert event_key({"type": "Dial", "peer": {"id": "c2"}}) == "channel:c2"
    assert event_key({"type": "ApplicationReplaced"}) == "global"


# ---- events ---------------------------------------------------------------------------------


async def test_events_of_one_channel_arrive_in_order_while_channels_run_concurrently(
    fake: FakeAri,
) -> None:
    seen: dict[str, list[int]] = {"a": [], "b": []}
    b_done = asyncio.get_running_loop().create_future()
    a_done = asyncio.get_running_loop().create_future()
    rng = random.Random(7)

    async def handle(event: Event) -> None:
        channel = event["channel"]["id"]
        if channel == "a" and event["seq"] == 0:
            # Holds channel a until channel b is finished: only possible if different
            # channels are handled concurrently.
            await b_done
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        seen[channel].append(event["seq"])
        if len(seen[channel]) == 20:
            (a_done if channel == "a" else b_done).set_result(None)

    async with make_client(fake) as ari:
        ari.on("ChannelVarset", handle)
        ws = await within(5, fake.sockets.get())
        for seq in range(20):
            for channel in ("a", "b"):
                await ws.send_json(channel_event("ChannelVarset", channel, seq=seq))
        await within(5, asyncio.gather(a_done, b_done))
    assert seen == {"a": list(range(20)), "b": list(range(20))}


async def test_failing_handler_is_logged_with_channel_and_counted_and_events_keep_flowing(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[str] = []
    done = asyncio.get_running_loop().create_future()

    async def handle(event: Event) -> None:
        if event["channel"]["id"] == "1700.1":
            raise RuntimeError("bug in a handler")
        handled.append(event["channel"]["id"])
        done.set_result(None)

    async with make_client(fake) as ari:
        ari.on("StasisStart", handle)
        ws = await within(5, fake.sockets.get())
        await ws.send_json(channel_event("StasisStart", "1700.1"))
        await ws.send_json(channel_event("StasisStart", "1700.2"))
        await within(5, done)
        assert ari.stats.errors == 1
    assert handled == ["1700.2"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "StasisStart" in record.getMessage()
    assert "1700.1" in record.getMessage()
    assert record.exc_info is not None


async def test_non_json_frame_is_counted_and_skipped(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    done = asyncio.get_running_loop().create_future()

    async def handle(event: Event) -> None:
        done.set_result(event["channel"]["id"])

    async with make_client(fake) as ari:
        ari.on("StasisStart", handle)
        ws = await within(5, fake.sockets.get())
        await ws.send_str("<html>proxy error</html>")
        await ws.send_str("[1, 2]")
        await ws.send_bytes(b"\x00\x01")
        await ws.send_json(channel_event("StasisStart", "c1"))
        assert await within(5, done) == "c1"
        assert ari.stats.bad_frames == 3
        assert ari.status == "connected"
    assert "proxy error" in caplog.text


async def test_slow_handler_is_counted_and_logged_as_delayed_by_event_type(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    done = asyncio.get_running_loop().create_future()

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.05)
        done.set_result(None)

    async with make_client(fake, handler_budget=0.01) as ari:
        ari.on("ChannelDtmfReceived", slow)
        ws = await within(5, fake.sockets.get())
        with LogSignal("pbx.ari", "over the 10 ms budget") as over_budget:
            await ws.send_json(channel_event("ChannelDtmfReceived", "c9", digit="0"))
            await within(5, done)
            # The budget check runs right after the handler returns, and logs.
            await within(5, over_budget.seen.wait())
        assert ari.stats.delayed == {"ChannelDtmfReceived": 1}
    assert "over the 10 ms budget" in caplog.text
    assert "channel:c9" in caplog.text


async def test_wildcard_handler_sees_every_event(fake: FakeAri) -> None:
    kinds: list[str] = []
    done = asyncio.get_running_loop().create_future()

    async def everything(event: Event) -> None:
        kinds.append(event["type"])
        if event["type"] == "BridgeDestroyed":
            done.set_result(None)

    async with make_client(fake) as ari:
        ari.on("*", everything)
        ws = await within(5, fake.sockets.get())
        await ws.send_json({"type": "BridgeCreated", "bridge": {"id": "b"}})
        await ws.send_json({"type": "BridgeDestroyed", "bridge": {"id": "b"}})
        await within(5, done)
    assert kinds == ["BridgeCreated", "BridgeDestroyed"]


# ---- connection ------------------------------------------------------------------------------


async def test_no_event_is_dispatched_and_not_ready_until_on_connect_has_reconciled(
    fake: FakeAri,
) -> None:
    loop = asyncio.get_running_loop()
    reconciling = loop.create_future()
    release = loop.create_future()
    handled = loop.create_future()

    async def on_connect() -> None:
        reconciling.set_result(None)
        await release

    async def handle(event: Event) -> None:
        handled.set_result(event["channel"]["id"])

    async with make_client(fake, on_connect=on_connect) as ari:

        def status() -> str:
            # Read afresh each time: the link's own task changes it, which mypy's
            # narrowing after the first comparison cannot know.
            return ari.status

        ari.on("StasisStart", handle)
        ws = await within(5, fake.sockets.get())
        await within(5, reconciling)
        await ws.send_json(channel_event("StasisStart", "c1"))
        ready = asyncio.ensure_future(ari.wait_ready())
        # Something that must not happen: the client gives no sign of an event left in
        # the socket while it reconciles, so the test watches for a while instead.
        await asyncio.sleep(0.05)
        assert not ready.done() and not handled.done()
        assert status() == "degraded"
        release.set_result(None)
        await within(5, ready)
        assert status() == "connected"
        assert await within(5, handled) == "c1"


async def test_reconnects_after_asterisk_drops_the_socket_and_reconciles_again(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pbx.ari")
    connects: list[int] = []
    reasons: asyncio.Queue[str] = asyncio.Queue()

    async def on_connect() -> None:
        connects.append(len(connects) + 1)

    async def on_disconnect(reason: str) -> None:
        reasons.put_nowait(reason)

    async with make_client(fake, on_connect=on_connect, on_disconnect=on_disconnect) as ari:
        first = await within(5, fake.sockets.get())
        await within(5, ari.wait_ready())
        await first.close()
        assert "closed by Asterisk" in await within(5, reasons.get())
        await within(5, fake.sockets.get())
        await within(5, ari.wait_ready())
        assert connects == [1, 2]
        assert ari.stats.connects == 2
        assert ari.status == "connected"
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    restored = [r for r in caplog.records if "restored" in r.getMessage()]
    assert len(lost) == len(restored) == 1


async def test_outage_is_logged_once_however_many_attempts_fail(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pbx.ari")
    fake.refuse_events = True
    async with make_client(fake, backoff_initial=0.001, backoff_max=0.002) as ari:
        for _ in range(5):
            await within(5, fake.attempted.get())
        fake.refuse_events = False
        await within(5, ari.wait_ready())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "unavailable: handshake refused with HTTP 503" in warnings[0]
    assert "restored after" in warnings[1]


async def test_failed_on_connect_is_counted_and_retried_on_a_new_connection(
    fake: FakeAri,
) -> None:
    attempts = 0

    async def on_connect() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise AriNotFound(404, "GET", "/applications/switchboard", "not yet")

    async with make_client(fake, on_connect=on_connect) as ari:
        await within(5, ari.wait_ready())
        assert attempts == 2
        assert ari.stats.errors == 1
        assert fake.sockets.qsize() == 2


async def test_missing_pong_is_taken_as_a_dead_asterisk_and_reconnects(fake: FakeAri) -> None:
    fake.answer_pings = False
    reasons: asyncio.Queue[str] = asyncio.Queue()

    async def on_disconnect(reason: str) -> None:
        reasons.put_nowait(reason)

    async with make_client(
        fake, ping_interval=0.02, pong_timeout=0.05, on_disconnect=on_disconnect
    ):
        assert "no pong within 0.1 s" in await within(5, reasons.get())
        await within(5, fake.sockets.get())
        await within(5, fake.sockets.get())  # and it came back


async def test_pongs_keep_a_quiet_connection_up(fake: FakeAri) -> None:
    async with make_client(fake, ping_interval=0.01, pong_timeout=0.5) as ari:
        await within(5, ari.wait_ready())
        await until(lambda: fake.pings >= 10, 5)  # ten ping/pong rounds
        assert ari.stats.connects == 1
        assert ari.status == "connected"


async def test_close_during_backoff_returns_promptly(fake: FakeAri) -> None:
    loop = asyncio.get_running_loop()
    lost = loop.create_future()

    async def on_disconnect(reason: str) -> None:
        lost.set_result(reason)

    ari = make_client(fake, backoff_initial=60, backoff_max=60, on_disconnect=on_disconnect)
    await ari.start()
    first = await within(5, fake.sockets.get())
    await first.close()
    await within(5, lost)  # the supervisor is now sleeping 30-60 s before retrying
    started = loop.time()
    await within(1, ari.close())
    assert loop.time() - started < 0.5
    assert ari.status == "closed"


async def test_close_cancels_and_awaits_every_task_it_started(fake: FakeAri) -> None:
    release = asyncio.get_running_loop().create_future()
    entered = asyncio.get_running_loop().create_future()

    async def stuck(event: Event) -> None:
        entered.set_result(None)
        await release  # a handler still running at shutdown

    def ours() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("ARI")]

    ari = make_client(fake)
    await ari.start()
    ari.on("StasisStart", stuck)
    ws = await within(5, fake.sockets.get())
    await ws.send_json(channel_event("StasisStart", "c1"))
    await within(5, entered)
    assert ours()
    await within(1, ari.close())
    assert ours() == []
    with pytest.raises(AriUnavailable, match="closed"):
        await ari.channels.list()


async def test_rest_works_while_the_event_stream_is_down(fake: FakeAri) -> None:
    fake.refuse_events = True
    fake.replies[("GET", "/asterisk/ping")] = (200, {"ping": "pong"})
    async with make_client(fake) as ari:
        assert await ari.asterisk.ping() == {"ping": "pong"}
        assert ari.status == "degraded"


@pytest.mark.parametrize("apps", ["switchboard,supervisor", ["switchboard", "supervisor"]])
async def test_several_apps_share_one_event_socket(fake: FakeAri, apps: str | list[str]) -> None:
    async with make_client(fake, apps=apps) as ari:
        await within(5, ari.wait_ready())
        assert ari.apps == ("switchboard", "supervisor")
    assert fake.event_attempts == ["switchboard,supervisor"]


async def test_a_full_channel_queue_holds_reading_back_without_dropping_events(
    fake: FakeAri,
) -> None:
    loop = asyncio.get_running_loop()
    release = loop.create_future()
    all_seen = loop.create_future()
    seen: list[int] = []

    async def handle(event: Event) -> None:
        await release
        seen.append(event["seq"])
        if len(seen) == 30:
            all_seen.set_result(None)

    with LogSignal("pbx.ari", "reading paused") as paused:
        async with make_client(fake, queue_size=3) as ari:
            ari.on("ChannelVarset", handle)
            ws = await within(5, fake.sockets.get())
            for seq in range(30):
                await ws.send_json(channel_event("ChannelVarset", "c1", seq=seq))
            await within(5, paused.seen.wait())
            release.set_result(None)
            await within(5, all_seen)
            assert ari.status == "connected"
    assert seen == list(range(30))
