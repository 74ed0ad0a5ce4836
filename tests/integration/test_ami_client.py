"""The AMI client against the real Asterisk 22 PBX: the controller's AMI user can log
in and read, but every action that reaches the shell or the config files is refused
(CVE-2024-42365, AST-2012-004: treat originate like system)."""

from __future__ import annotations

import asyncio

import pytest

from pbx.ami import AmiActionRefused, AmiLoginFailed, AmiMessage
from pbx.ari import AriClient
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
    # No Stasis app is registered on the PBX here, so Stasis() fails and the inbound
    # leg is hung up at once: a whole channel lifetime in a few milliseconds.
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
        uniqueid = await asyncio.wait_for(hung_up.get(), 10)
    ours = [kind for uid, kind in seen if uid == uniqueid]
    assert ours[0] == "Newchannel"
    assert ours[-1] == "Hangup"
    assert ami.stats.errors == 0
