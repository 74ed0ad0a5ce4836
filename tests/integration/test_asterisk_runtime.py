"""The foundation on a real Asterisk: it runs with our configuration, calls arrive, and
stopping leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import socket
import stat
from pathlib import Path

import aiohttp
import pytest

from pbx import runtime
from pbx.asterisk_config import InboundRoute, SipAgent
from tests.integration.asterisk_helpers import (
    BrowserPhone,
    EventListener,
    Pair,
    ari,
    of_type,
    process_ids,
)
from tests.waiting import until

pytestmark = pytest.mark.integration


async def test_pbx_reports_asterisk_22_over_ari(pair: Pair) -> None:
    status, info = await ari(pair.pbx, "GET", "/asterisk/info")
    assert status == 200
    assert info["system"]["version"].startswith("22.")


async def test_asterisk_runs_as_an_unprivileged_account_of_its_own(pair: Pair) -> None:
    # A flaw reached over SIP or RTP gets Asterisk's account, not root; and no other
    # host service's (the chroot separates files, not processes). The controller, root,
    # still drives it through the remote console.
    for instance in (pair.pbx, pair.carrier):
        account = instance.account
        assert account is not None and instance.pid is not None
        ids = process_ids(instance.pid)
        assert ids == {"Uid": [account.uid] * 4, "Gid": [account.gid] * 4}
        assert account.uid != 0 and account.gid != 0
        with contextlib.suppress(KeyError):
            assert pwd.getpwuid(account.uid).pw_name == "asterisk"
        # It owns what it writes (recordings, the console's socket); it reads its
        # configuration, with the ARI/AMI secrets, and cannot change it.
        for folder in ("var/spool/recording", "var/run", "var/log", "var/lib"):
            assert (instance.host_root / folder).stat().st_uid == account.uid, folder
        conf = (instance.host_root / "etc/pjsip.conf").stat()
        assert (conf.st_uid, conf.st_gid) == (0, account.gid)
        assert stat.S_IMODE(conf.st_mode) == 0o640
        assert "System uptime" in await instance.cli("core show uptime")


def boot_lines(log_file: Path) -> list[str]:
    """The log of the instance's first start, up to "Asterisk Ready." (what later tests
    do to the shared instance is not start-up)."""
    lines = []
    for line in log_file.read_text(errors="replace").splitlines():
        lines.append(line)
        if "Asterisk Ready." in line:
            return lines
    raise AssertionError(f"{log_file} never says Asterisk Ready.")


async def test_asterisk_starts_without_an_error_in_its_log(pair: Pair) -> None:
    # A new admin reads every ERROR at start as a fault: Asterisk finds every file it
    # looks for at boot (cdr.conf, features.conf, ...) and loads no module that wants
    # what the product does not have.
    for instance in (pair.pbx, pair.carrier):
        errors = [line for line in boot_lines(instance.log_file) if "ERROR[" in line]
        assert errors == [], f"{instance.spec.name}:\n" + "\n".join(errors)


async def test_ari_and_ami_listen_on_loopback_only(pair: Pair) -> None:
    out = await pair.pbx.cli("http show status")
    assert f"127.0.0.1:{pair.pbx.spec.ports.http}" in out
    manager = await pair.pbx.cli("manager show settings")
    assert "127.0.0.1" in manager


async def test_wrong_ari_password_is_refused(pair: Pair) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{pair.pbx.ari_url}/asterisk/info",
            headers={"Authorization": "Basic c3dpdGNoYm9hcmQ6d3Jvbmc="},  # switchboard:wrong
        ) as resp,
    ):
        assert resp.status == 401


async def test_functions_that_reach_outside_asterisk_are_refused_to_ari(pair: Pair) -> None:
    """live_dangerously = no: ARI may not call a function that reaches outside Asterisk.
    The product loads none (no func_shell, no func_env), so SHELL() simply does not
    exist; FILE() (func_env) is loaded here for this test only, to show that even a
    loaded one is refused to ARI, while the PBX itself has it."""
    async with (
        EventListener(pair.pbx, "switchboard") as pbx_events,
        EventListener(pair.carrier, "carrier"),
    ):
        status, _ = await ari(
            pair.carrier, "POST", "/channels", endpoint="PJSIP/2000@switchboard", app="carrier"
        )
        assert status == 200
        start = await pbx_events.wait_for(of_type("StasisStart"))
        channel = start["channel"]["id"]
        try:
            status, body = await ari(
                pair.pbx, "GET", f"/channels/{channel}/variable", variable="SHELL(id)")
            assert status >= 400, body
            assert "func_shell" not in await pair.pbx.cli("module show like func_shell")
            await pair.pbx.cli("module load func_env.so")
            try:
                assert "FILE" in await pair.pbx.cli("core show function FILE")
                status, body = await ari(pair.pbx, "GET", f"/channels/{channel}/variable",
                                         variable="FILE(/etc/hostname)")
                assert status >= 400, body
            finally:
                await pair.pbx.cli("module unload func_env.so")
        finally:
            await ari(pair.pbx, "DELETE", f"/channels/{channel}")
            await pbx_events.wait_for(of_type("StasisEnd", channel__id=channel))


async def test_call_from_carrier_arrives_in_stasis_with_assistant_and_number(
    quiet_pair: Pair,
) -> None:
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    async with (
        EventListener(pbx, "switchboard") as pbx_events,
        EventListener(carrier, "carrier") as carrier_events,
    ):
        status, outbound = await ari(
            carrier,
            "POST",
            "/channels",
            endpoint="PJSIP/2000@switchboard",
            app="carrier",
            callerId="Ada Lovelace <+15550100>",
        )
        assert status == 200, outbound
        start = await pbx_events.wait_for(of_type("StasisStart"))
        assert start["args"] == ["inbound", "receptionist", "2000"]
        assert start["channel"]["caller"]["number"] == "+15550100"
        assert start["channel"]["name"].startswith("PJSIP/carrier-")
        channel = start["channel"]["id"]

        status, _ = await ari(pbx, "POST", f"/channels/{channel}/answer")
        assert status == 204
        await carrier_events.wait_for(of_type("StasisStart", channel__id=outbound["id"]))

        await ari(pbx, "DELETE", f"/channels/{channel}")
        await pbx_events.wait_for(of_type("StasisEnd", channel__id=channel))
        await carrier_events.wait_for(of_type("ChannelDestroyed", channel__id=outbound["id"]))


async def test_the_pbx_takes_calls_up_to_its_limit_and_refuses_the_next_by_that_limit(
    quiet_pair: Pair,
) -> None:
    # The RTP range used to be 100 ports on both sides: 50 streams, so the 51st caller
    # was refused ("couldn't allocate a port for RTP instance") while maxcalls said 500.
    # Each INVITE takes its RTP ports as its offer is answered, on the carrier and the
    # PBX alike, so callers left ringing in Stasis are enough to show where it stops.
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    limit = pbx.spec.max_calls
    assert limit > 50  # past the old ceiling (PAIR_MAX_CALLS)
    async with (
        EventListener(pbx, "switchboard") as pbx_events,
        EventListener(carrier, "carrier") as carrier_events,
    ):
        placed: list[str] = []

        async def place_call() -> str:
            status, outbound = await ari(
                carrier, "POST", "/channels", endpoint="PJSIP/2000@switchboard",
                app="carrier", callerId=f"Caller <+1555010{len(placed):04d}>",
            )
            assert status == 200, f"call {len(placed) + 1}: {outbound}"
            placed.append(outbound["id"])
            return str(outbound["id"])

        def arrived() -> int:
            return sum(1 for e in pbx_events.events if e.get("type") == "StasisStart")

        def log_lines(text: str) -> list[str]:
            return [line for instance in (pbx, carrier)
                    for line in instance.log_file.read_text().splitlines() if text in line]

        try:
            for _ in range(limit):
                await place_call()
            with contextlib.suppress(TimeoutError):
                await pbx_events.wait_for(lambda _: arrived() >= limit, timeout=20)
            no_port = log_lines("allocate a port for RTP")
            assert arrived() == limit, f"{arrived()} of {limit} calls arrived: {no_port[:2]}"

            # One more: refused by the call limit, which is what it is there for.
            over = await place_call()
            await carrier_events.wait_for(of_type("ChannelDestroyed", channel__id=over))
            placed.remove(over)
            assert arrived() == limit
            # Asterisk's logger writes the refusal a moment after the channel went.
            await until(lambda: log_lines(f"Maximum call limit of {limit} calls exceeded"),
                        10, why="the refusal was not logged as the call limit")
            assert log_lines("allocate a port for RTP") == []
        finally:
            for outbound in placed:
                await ari(carrier, "DELETE", f"/channels/{outbound}")
            for outbound in placed:
                await carrier_events.wait_for(of_type("ChannelDestroyed", channel__id=outbound))


def crafted_invite(pbx: runtime.AsteriskInstance, number: str) -> str:
    """The carrier's dial string for an INVITE whose Request-URI user is ``number``, as
    written, sent over its trunk: a number with ``&`` or ``/`` in it would otherwise be
    taken apart by the carrier's own channel driver and never reach the PBX."""
    return f"PJSIP/switchboard/sip:{number}@127.0.0.1:{pbx.sip_port}"


@pytest.mark.parametrize(
    "number",
    ["2001", "500&PJSIP/carrier/0900123", "2000;x", "21"],
)
async def test_numbers_outside_strict_patterns_reach_no_route_and_no_dial(
    quiet_pair: Pair, number: str,
) -> None:
    """A number the PBX does not serve (toll fraud: ``&`` and ``/`` to smuggle a second
    call into Dial) reaches no assistant's route. The crafted INVITE itself arrives over
    the trunk; the dialplan's catch-all hands the controller only its digits, marked
    unknown, for routing.unknown_numbers to refuse or redirect. Nothing is dialled."""
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    async with (
        EventListener(pbx, "switchboard") as pbx_events,
        EventListener(carrier, "carrier") as carrier_events,
    ):
        status, outbound = await ari(carrier, "POST", "/channels",
                                     endpoint=crafted_invite(pbx, number), app="carrier")
        assert status == 200, outbound  # the INVITE went out: the PBX must answer it
        start = await pbx_events.wait_for(of_type("StasisStart"))
        assert start["args"] == ["unknown", re.sub(r"[^0-9+]", "", number)]
        # What the controller does with routing.unknown_numbers = "reject".
        await ari(pbx, "DELETE", f"/channels/{start['channel']['id']}", reason_code="1")
        destroyed = await carrier_events.wait_for(
            of_type("ChannelDestroyed", channel__id=outbound["id"]))
        assert destroyed["cause"] == 1, destroyed  # 404 Not Found
        await pbx_events.wait_for(of_type("StasisEnd"))
    _, channels = await ari(pbx, "GET", "/channels")
    assert channels == []


async def test_a_served_number_sent_the_same_way_reaches_its_assistant(
    quiet_pair: Pair,
) -> None:
    """The control for the test above: the same crafted path with a served number."""
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    async with EventListener(pbx, "switchboard") as pbx_events, EventListener(carrier, "carrier"):
        status, _ = await ari(carrier, "POST", "/channels",
                              endpoint=crafted_invite(pbx, "2000"), app="carrier")
        assert status == 200
        start = await pbx_events.wait_for(of_type("StasisStart"))
        assert start["args"] == ["inbound", "receptionist", "2000"]
        await ari(pbx, "DELETE", f"/channels/{start['channel']['id']}")
        await pbx_events.wait_for(of_type("StasisEnd"))


async def test_routes_with_patterns_pass_the_dialled_number(quiet_pair: Pair) -> None:
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    async with EventListener(pbx, "switchboard") as pbx_events, EventListener(carrier, "carrier"):
        status, _ = await ari(
            carrier, "POST", "/channels", endpoint="PJSIP/2142@switchboard", app="carrier"
        )
        assert status == 200
        start = await pbx_events.wait_for(of_type("StasisStart"))
        assert start["args"] == ["inbound", "sales", "2142"]
        await ari(pbx, "DELETE", f"/channels/{start['channel']['id']}")
        await pbx_events.wait_for(of_type("StasisEnd"))


def _asterisk_pids_for(conf_fragment: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "asterisk" in cmdline and conf_fragment in cmdline:
            pids.append(int(entry.name))
    return pids


async def test_stop_leaves_no_process_and_no_tree(
    installation: runtime.Installation, state_dir: Path
) -> None:
    instance = runtime.new_instance(installation, f"stoptest{os.getpid()}", state_dir)
    await instance.start()
    assert _asterisk_pids_for(instance.conf_inside)
    await instance.stop()
    assert not instance.running
    assert _asterisk_pids_for(instance.conf_inside) == []
    assert not instance.host_root.exists()


async def test_stop_kills_an_asterisk_that_ignores_the_cli(
    installation: runtime.Installation, state_dir: Path
) -> None:
    instance = runtime.new_instance(installation, f"killtest{os.getpid()}", state_dir)
    await instance.start()
    assert instance.process is not None
    os.kill(instance.process.pid, 19)  # SIGSTOP: the remote console can no longer reach it
    await instance.stop(timeout=4)
    assert _asterisk_pids_for(instance.conf_inside) == []


async def test_port_already_in_use_is_reported_by_its_setting(
    installation: runtime.Installation, state_dir: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(runtime.PortInUse) as caught:
            runtime.new_instance(
                installation, "porttest", state_dir, ports=runtime.PortRequest(http=taken)
            )
    assert "asterisk.http_port" in str(caught.value)
    assert str(taken) in str(caught.value)


async def test_two_instances_run_side_by_side(pair: Pair) -> None:
    a, b = await asyncio.gather(
        ari(pair.pbx, "GET", "/asterisk/info"), ari(pair.carrier, "GET", "/asterisk/info")
    )
    assert a[0] == b[0] == 200
    assert pair.pbx.spec.ports != pair.carrier.spec.ports


async def test_new_agents_and_numbers_are_live_without_a_restart(
    installation: runtime.Installation, state_dir: Path
) -> None:
    # An admin adds an agent (and an assistant number) while calls run: the PBX takes the
    # new endpoint and route at once, the process is the same.
    instance = runtime.new_instance(installation, f"dirtest{os.getpid()}", state_dir)
    await instance.start()
    try:
        assert instance.process is not None
        pid = instance.process.pid
        assert "agent-zoe" not in await instance.cli("pjsip show endpoints")
        assert "assistant sales" not in await instance.cli("dialplan show 3100@from-trunk")
        await instance.apply_directory(
            (*instance.spec.routes, InboundRoute("3100", "sales")),
            (*instance.spec.agents, SipAgent("agent-zoe", "zoe-sip-secret", "webrtc", "Zoe")),
        )
        endpoint = await instance.cli("pjsip show endpoint agent-zoe")
        assert "agent-zoe" in endpoint and "Unavailable" in endpoint  # known, not registered
        assert "assistant sales" in await instance.cli("dialplan show 3100@from-trunk")
        assert instance.process.pid == pid and instance.running
    finally:
        await instance.stop()


async def test_a_browser_phone_is_online_while_its_socket_is_open_and_never_pinged_after(
    installation: runtime.Installation, state_dir: Path
) -> None:
    # Desk tabs that register their phone and close at once (a reload, a tab closed just
    # after opening): Asterisk drops each contact as its WebSocket closes, and must not
    # send an OPTIONS over the socket that just went ("Unsupported transport").
    instance = runtime.new_instance(
        installation, f"wsphone{os.getpid()}", state_dir,
        agents=(SipAgent("web-ada", "web-ada-secret", "webrtc", "Ada"),),
    )
    await instance.start()

    async def state() -> str:
        _, endpoint = await ari(instance, "GET", "/endpoints/PJSIP/web-ada")
        return str(endpoint["state"])

    async def becomes(wanted: str) -> bool:
        for _ in range(100):  # 10 s at most
            if await state() == wanted:
                return True
            await asyncio.sleep(0.1)
        return False

    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                tab = await BrowserPhone.register(session, instance, "web-ada", "web-ada-secret")
                await tab.close()
            tab = await BrowserPhone.register(session, instance, "web-ada", "web-ada-secret")
            assert await becomes("online")  # what the desk's phone check asks
            await tab.close()
            assert await becomes("offline")  # the contact went with the socket
        errors = [line for line in instance.log_file.read_text().splitlines() if "ERROR[" in line]
        assert errors == []
    finally:
        await instance.stop()
