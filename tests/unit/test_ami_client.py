"""The AMI client against a fake AMI server speaking the line protocol over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from pbx.ami import AmiActionRefused, AmiClient, AmiLoginFailed, AmiMessage, AmiUnavailable

USER, SECRET = "switchboard", "s3cret"


def frame(**headers: str) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"


@dataclass
class FakeAmi:
    """Asterisk's manager port as far as the client uses it."""

    silent: set[str] = field(default_factory=set)
    """Actions left unanswered (a hung Asterisk, or a link about to drop)."""
    actions: list[dict[str, str]] = field(default_factory=list)
    logins: asyncio.Queue[asyncio.StreamWriter] = field(default_factory=asyncio.Queue)
    received: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        self.writers.append(writer)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = dict(
                    line.split(": ", 1) for line in raw.decode().strip().split("\r\n") if line
                )
                self.actions.append(action)
                self.received.put_nowait(action)
                if not self.answer(action, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ValueError):
                self.writers.remove(writer)

    def answer(self, action: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        name, action_id = action["Action"], action["ActionID"]
        if name in self.silent:
            return True
        if name == "Login":
            if action.get("Secret") != SECRET:
                writer.write(
                    frame(Response="Error", ActionID=action_id, Message="Authentication failed")
                )
                return False  # Asterisk hangs up after a refused login
            writer.write(
                frame(Response="Success", ActionID=action_id, Message="Authentication accepted")
            )
            self.logins.put_nowait(writer)
        elif name == "Ping":
            writer.write(frame(Response="Success", ActionID=action_id, Ping="Pong"))
        elif name == "CoreShowChannels":
            writer.write(
                frame(
                    Response="Success",
                    ActionID=action_id,
                    EventList="start",
                    Message="Channels will follow",
                )
                + frame(
                    Event="CoreShowChannel",
                    ActionID=action_id,
                    Channel="PJSIP/carrier-00000001",
                    Uniqueid="1700.1",
                )
                + frame(
                    Event="CoreShowChannelsComplete",
                    ActionID=action_id,
                    EventList="Complete",
                    ListItems="1",
                )
            )
        else:
            writer.write(frame(Response="Error", ActionID=action_id, Message="Permission denied"))
        return True

    def emit(self, **headers: str) -> None:
        for writer in self.writers:
            writer.write(frame(**headers))

    def drop(self) -> None:
        for writer in list(self.writers):
            writer.close()


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    fake = FakeAmi()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    yield fake
    fake.drop()
    server.close()
    await server.wait_closed()


def make_client(fake: FakeAmi, secret: str = SECRET, **options: Any) -> AmiClient:
    options.setdefault("backoff_initial", 0.01)
    options.setdefault("backoff_max", 0.05)
    return AmiClient("127.0.0.1", fake.port, USER, secret, **options)


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


async def test_logs_in_and_returns_an_action_response(fake: FakeAmi) -> None:
    async with make_client(fake) as ami:
        await within(5, ami.wait_ready())
        assert ami.status == "connected"
        [pong] = await ami.send_action({"Action": "Ping"})
    assert pong["ping"] == "Pong"  # header names are case-insensitive
    login = fake.actions[0]
    assert (login["Action"], login["Username"], login["Secret"]) == ("Login", USER, SECRET)


async def test_list_action_returns_the_response_then_its_events(fake: FakeAmi) -> None:
    async with make_client(fake) as ami:
        await within(5, ami.wait_ready())
        reply = await ami.send_action({"Action": "CoreShowChannels"})
    assert [m.get("Event") or m.get("Response") for m in reply] == [
        "Success",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
    ]


async def test_refused_action_raises_with_asterisks_reason(fake: FakeAmi) -> None:
    async with make_client(fake) as ami:
        await within(5, ami.wait_ready())
        with pytest.raises(AmiActionRefused, match="AMI Command refused: Permission denied"):
            await ami.send_action({"Action": "Command", "Command": "core show version"})
        [reply] = await ami.send_action({"Action": "GetConfig", "Filename": "x"}, check=False)
    assert reply["Response"] == "Error"


async def test_wrong_secret_fails_wait_ready_with_login_failed(fake: FakeAmi) -> None:
    async with make_client(fake, secret="wrong") as ami:
        with pytest.raises(AmiLoginFailed, match="Authentication failed"):
            await within(5, ami.wait_ready())
        assert ami.status == "degraded"


async def test_on_connect_runs_after_every_login_and_may_send_actions(fake: FakeAmi) -> None:
    pongs: list[str] = []

    async def on_connect() -> None:
        [pong] = await ami.send_action({"Action": "Ping"})
        pongs.append(pong["Ping"])

    ami = make_client(fake, on_connect=on_connect)
    async with ami:
        await within(5, ami.wait_ready())
        fake.drop()
        await within(5, fake.logins.get())
        await within(5, fake.logins.get())
        await within(5, ami.wait_ready())
        assert pongs == ["Pong", "Pong"]


async def test_action_before_login_raises_unavailable(fake: FakeAmi) -> None:
    ami = make_client(fake)
    with pytest.raises(AmiUnavailable, match="not connected"):
        await ami.send_action({"Action": "Ping"})
    await ami.close()


async def test_events_reach_async_handlers_in_order_and_a_failure_is_isolated(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    done = asyncio.get_running_loop().create_future()

    async def on_newstate(event: AmiMessage) -> None:
        if event["ChannelStateDesc"] == "Broken":
            raise RuntimeError("handler bug")
        seen.append(event["ChannelStateDesc"])
        if event["ChannelStateDesc"] == "Up":
            done.set_result(None)

    async with make_client(fake) as ami:
        ami.on("Newstate", on_newstate)
        await within(5, ami.wait_ready())
        for state in ("Ring", "Broken", "Ringing", "Up"):
            fake.emit(Event="Newstate", Uniqueid="1700.1", ChannelStateDesc=state)
        fake.emit(Event="Hangup", Uniqueid="1700.1")  # nobody listens; ignored
        await within(5, done)
        assert ami.stats.errors == 1
    assert seen == ["Ring", "Ringing", "Up"]
    assert "Newstate Uniqueid=1700.1" in caplog.text


async def test_security_events_reach_security_handlers(fake: FakeAmi) -> None:
    got = asyncio.get_running_loop().create_future()

    async def on_security(event: AmiMessage) -> None:
        got.set_result(event)

    async with make_client(fake) as ami:
        ami.on_security(on_security)
        await within(5, ami.wait_ready())
        fake.emit(Event="FullyBooted", Privilege="system,all")
        fake.emit(
            Event="InvalidPassword",
            Privilege="security,all",
            AccountID="agent7",
            RemoteAddress="IPV4/UDP/203.0.113.9/5060",
        )
        event = await within(5, got)
    assert event["Event"] == "InvalidPassword"
    assert event["AccountID"] == "agent7"


async def test_action_in_flight_when_the_link_drops_fails_and_is_never_replayed(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pbx.ami")
    fake.silent.add("Originate")
    async with make_client(fake) as ami:
        await within(5, ami.wait_ready())
        await within(5, fake.logins.get())
        pending = asyncio.ensure_future(
            ami.send_action({"Action": "Originate", "Channel": "PJSIP/agent1"})
        )
        while (await within(5, fake.received.get()))["Action"] != "Originate":
            pass
        fake.drop()
        with pytest.raises(AmiUnavailable, match="link dropped before the answer"):
            await within(5, pending)
        await within(5, fake.logins.get())  # logged in again
        await within(5, ami.wait_ready())
        [pong] = await ami.send_action({"Action": "Ping"})
        assert pong["Ping"] == "Pong"
    assert [a["Action"] for a in fake.actions] == ["Login", "Originate", "Login", "Ping"]
    assert "lost" in caplog.text and "restored" in caplog.text


async def test_unanswered_ping_is_taken_as_a_dead_asterisk_and_reconnects(
    fake: FakeAmi,
) -> None:
    fake.silent.add("Ping")
    async with make_client(fake, ping_interval=0.02, pong_timeout=0.05) as ami:
        await within(5, fake.logins.get())
        await within(5, fake.logins.get())  # a second login: it gave up on the first link
        assert ami.stats.connects >= 1


async def test_close_during_backoff_returns_promptly(fake: FakeAmi) -> None:
    loop = asyncio.get_running_loop()
    lost = loop.create_future()

    async def on_disconnect(reason: str) -> None:
        lost.set_result(reason)

    ami = make_client(fake, backoff_initial=60, backoff_max=60, on_disconnect=on_disconnect)
    await ami.start()
    await within(5, ami.wait_ready())
    fake.drop()
    await within(5, lost)  # now sleeping 30-60 s before the next attempt
    started = loop.time()
    await within(1, ami.close())
    assert loop.time() - started < 0.5
    assert ami.status == "closed"
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("AMI")] == []


async def test_a_backlog_pauses_reading_instead_of_dropping_events(fake: FakeAmi) -> None:
    loop = asyncio.get_running_loop()
    release = loop.create_future()
    all_seen = loop.create_future()
    seen: list[int] = []

    async def on_varset(event: AmiMessage) -> None:
        await release
        seen.append(int(event["Value"]))
        if len(seen) == 40:
            all_seen.set_result(None)

    with LogSignal("pbx.ami", "reading paused") as paused:
        async with make_client(fake, queue_size=4) as ami:
            ami.on("VarSet", on_varset)
            await within(5, ami.wait_ready())
            for value in range(20):
                fake.emit(Event="VarSet", Uniqueid="1700.1", Value=str(value))
            await within(5, paused.seen.wait())
            release.set_result(None)
            for value in range(20, 40):
                fake.emit(Event="VarSet", Uniqueid="1700.1", Value=str(value))
            await within(5, all_seen)
    assert seen == list(range(40))
