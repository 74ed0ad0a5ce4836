"""The AMI client against the real Asterisk 22 PBX: the controller's AMI user can log
in and read, but every action that reaches the shell or the config files is refused
(CVE-2024-42365, AST-2012-004: treat originate like system)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pbx.ami import AmiActionRefused, AmiLoginFailed, AmiMessage
from pbx.ari import AriClient
from pbx.runtime import AsteriskInstance
from tests.integration.asterisk_helpers import Pair, ami_client

pytestmark = pytest.mark.integration


REFUSED_ACTIONS: list[dict[str, str]] = [
    {"Action": "Command", "Command": "core show version"},
    {"Action": "GetConfig", "Filename": "manager.conf"},
    {"Action": "GetConfig", "Filename": "../../../../etc/passwd"},
    {
        "Action": "UpdateConfig",
        "SrcFilename": "extensions.conf",
        "DstFilename": "extensions.conf",
        "Action-000000": "Append",
        "Cat-000000": "from-trunk",
        "Var-000000": "exten",
        "Value-000000": "666,1,System(id)",
    },
    {
        "Action": "Originate",
        "Channel": "Local/2000@from-trunk",
        "Application": "System",
        "Data": "touch /tmp/pwned",
    },
    {
        "Action": "Originate",
        "Channel": "PJSIP/2000@carrier",
        "Context": "agents",
        "Exten": "*43",
        "Priority": "1",
    },
]


async def test_least_privilege_user_logs_in_and_reads_but_cannot_reach_shell_or_config(
    quiet_pair: Pair,
) -> None:
    async with ami_client(quiet_pair.pbx) as ami:
        await ami.wait_ready(10)
        [pong] = await ami.send_action({"Action": "Ping"})
        assert pong["Response"] == "Success"
        for action in REFUSED_ACTIONS:
            with pytest.raises(AmiActionRefused) as refused:
                await ami.send_action(action)
            assert refused.value.message == "Permission denied", action
        # Still logged in and usable after the refusals.
        [pong] = await ami.send_action({"Action": "Ping"})
        assert pong["Response"] == "Success"


async def test_wrong_secret_is_refused_and_reported_as_a_security_event(
    quiet_pair: Pair,
) -> None:
    security: asyncio.Queue[AmiMessage] = asyncio.Queue()

    async def on_security(event: AmiMessage) -> None:
        await security.put(event)

    async with ami_client(quiet_pair.pbx) as ami:
        ami.on_security(on_security)
        await ami.wait_ready(10)
        async with ami_client(quiet_pair.pbx, secret="guessed", backoff_initial=30) as intruder:
            with pytest.raises(AmiLoginFailed, match="Authentication failed"):
                await intruder.wait_ready(10)
        while True:
            event = await asyncio.wait_for(security.get(), 10)
            if event["Event"] == "InvalidPassword":
                break
    assert event["Service"] == "AMI"
    assert event["AccountID"] == quiet_pair.pbx.spec.ami_user


async def test_call_events_of_one_channel_arrive_in_order(quiet_pair: Pair) -> None:
    # No Stasis app is registered on the PBX here, so Stasis() fails, and after the
    # dialplan's wait for a controller (10 s) the inbound leg is hung up: a whole channel
    # lifetime, its events interleaved with the retries'.
    seen: list[tuple[str, str]] = []
    hung_up: asyncio.Queue[str] = asyncio.Queue()

    async def record(event: AmiMessage) -> None:
        seen.append((event["Uniqueid"], event["Event"]))
        if event["Event"] == "Hangup":
            await hung_up.put(event["Uniqueid"])

    user, password = quiet_pair.carrier.ari_auth
    async with (
        ami_client(quiet_pair.pbx) as ami,
        AriClient(quiet_pair.carrier.ari_url, user, password, "carrier") as carrier,
    ):
        for name in ("Newchannel", "Newstate", "Hangup"):
            ami.on(name, record)
        await ami.wait_ready(10)
        await carrier.wait_ready(10)
        await carrier.channels.originate("PJSIP/2000@switchboard", app="carrier")
        uniqueid = await asyncio.wait_for(hung_up.get(), 30)
    ours = [kind for uid, kind in seen if uid == uniqueid]
    assert ours[0] == "Newchannel"
    assert ours[-1] == "Hangup"
    assert ami.stats.errors == 0


async def _ami_socket(instance: AsteriskInstance, source: str = "127.0.0.1") -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP connection to the PBX's AMI port from ``source`` (a loopback address:
    another host to Asterisk's ACL), as anyone who can reach the port opens one."""
    return await asyncio.open_connection("127.0.0.1", instance.spec.ports.ami,
                                         local_addr=(source, 0))


def _listeners(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


async def test_ami_listens_on_loopback_only_and_refuses_a_login_from_outside_its_permit(
    quiet_pair: Pair,
) -> None:
    # R16: not reachable off this host (127.0.0.1 in /proc/net/tcp's byte order)...
    assert _listeners(quiet_pair.pbx.spec.ports.ami) == {"0100007F"}
    security: asyncio.Queue[AmiMessage] = asyncio.Queue()

    async def on_security(event: AmiMessage) -> None:
        await security.put(event)

    async with ami_client(quiet_pair.pbx) as ami:
        ami.on_security(on_security)
        await ami.wait_ready(10)
        # ...and from another address, even loopback's, the right secret is refused:
        # the user's permit is 127.0.0.1 alone.
        reader, writer = await _ami_socket(quiet_pair.pbx, source="127.0.0.7")
        try:
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"Asterisk")
            spec = quiet_pair.pbx.spec
            writer.write(f"Action: Login\r\nUsername: {spec.ami_user}\r\n"
                         f"Secret: {spec.ami_secret}\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        finally:
            writer.close()
        assert b"Response: Error" in answer and b"Authentication failed" in answer
        while True:
            event = await asyncio.wait_for(security.get(), 10)
            if event["Event"] == "FailedACL":
                break
    assert event["AccountID"] == quiet_pair.pbx.spec.ami_user
    assert "127.0.0.7" in event["RemoteAddress"]


AUTHLIMIT, AUTHTIMEOUT_S = 20, 10  # manager.conf.j2


async def test_an_ami_flood_is_shed_and_the_controllers_session_keeps_working(
    quiet_pair: Pair,
) -> None:
    # R17: more unauthenticated sockets than authlimit, held idle past authtimeout.
    user_events: asyncio.Queue[AmiMessage] = asyncio.Queue()

    async def on_user_event(event: AmiMessage) -> None:
        await user_events.put(event)

    async def still_working(n: int) -> None:
        """A ping answered, and an event sent through Asterisk comes back."""
        [pong] = await ami.send_action({"Action": "Ping"}, timeout=5)
        assert pong["Response"] == "Success"
        await ami.send_action({"Action": "UserEvent", "UserEvent": "probe", "N": str(n)})
        event = await asyncio.wait_for(user_events.get(), 5)
        assert event["N"] == str(n)

    async with ami_client(quiet_pair.pbx) as ami:
        ami.on("UserEvent", on_user_event)
        await ami.wait_ready(10)
        connects = ami.stats.connects
        flood = [await _ami_socket(quiet_pair.pbx) for _ in range(AUTHLIMIT + 10)]
        try:
            started = time.monotonic()
            greeted = []
            for reader, _ in flood:
                greeted.append((await asyncio.wait_for(reader.readline(), 10)).startswith(
                    b"Asterisk"))
            # Asterisk greets up to authlimit of them and closes the rest at once.
            assert greeted.count(True) == AUTHLIMIT, greeted
            await still_working(1)
            # The idle ones are dropped after authtimeout.
            for reader, _ in flood:
                async with asyncio.timeout(AUTHTIMEOUT_S + 10):
                    while await reader.read(4096):
                        pass
            shed_after = time.monotonic() - started
            assert shed_after >= AUTHTIMEOUT_S - 1
            await still_working(2)
        finally:
            for _, writer in flood:
                writer.close()
        assert ami.stats.connects == connects  # never lost its login
        # And a new login is let in again.
        async with ami_client(quiet_pair.pbx) as again:
            await again.wait_ready(10)
