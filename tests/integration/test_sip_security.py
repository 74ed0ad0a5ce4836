"""Who the PBX lets in over SIP, seen from the network: real SIP requests on loopback."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from pbx.security_events import SecurityEvents
from tests.integration.asterisk_helpers import (
    EventListener,
    Pair,
    ami_client,
    ari,
    of_type,
    sip_request,
)
from tests.sip_phone import SipPhone
from web.bench.rig import DESK_PHONE_PASSWORD, DESK_PHONE_SIP_USER

pytestmark = pytest.mark.integration


async def test_phones_are_challenged_in_the_sites_realm_not_the_softwares(
    quiet_pair: Pair,
) -> None:
    # The realm was "asterisk": every 401 told a scanner what runs behind the port.
    pbx = ("127.0.0.1", quiet_pair.pbx.sip_port)
    for user in (DESK_PHONE_SIP_USER, "nobody-here"):  # a known account and a guess
        reply = await sip_request(pbx, "REGISTER", user)
        assert reply.status == 401, reply.start
        challenges = reply.all("www-authenticate")
        assert challenges and all('realm="switchboard"' in c for c in challenges), challenges


def refusals(registry: CollectorRegistry, event: str) -> float:
    return registry.get_sample_value("switchboard_pbx_security_refusals_total",
                                     {"event": event, "service": "PJSIP"}) or 0.0


async def test_a_trunks_name_in_from_lets_nobody_in_and_is_counted(quiet_pair: Pair) -> None:
    # `From: <sip:carrier@...>` from any address used to be taken for the trunk `carrier`
    # (the username identifier matched it; a trunk has no credentials to ask for): the
    # call was answered and the AI greeted it. A trunk is its address and port only.
    pbx = quiet_pair.pbx
    trunks = [trunk.name for trunk in pbx.spec.trunks]
    assert len(trunks) >= 2
    registry = CollectorRegistry()
    watch = SecurityEvents(registry)  # the product's security watch, fed by AMI
    async with ami_client(pbx) as ami:
        ami.on_security(watch.observe)
        await ami.wait_ready(10)
        spoofs = 0
        # From the trunk's own host on another port, and from another address.
        for source in ("127.0.0.1", "127.0.0.2"):
            for name in trunks:
                reply = await sip_request(("127.0.0.1", pbx.sip_port), "INVITE", name,
                                          to="2000", source=source)
                assert reply.status == 401, f"{name} from {source}: {reply.start}"
                spoofs += 1
        for _ in range(100):  # AMI's events trail the 401s a little: 10 s at most
            if refusals(registry, "InvalidAccountID") >= spoofs:
                break
            await asyncio.sleep(0.1)
        assert refusals(registry, "InvalidAccountID") == spoofs


async def test_the_real_trunk_and_an_authenticating_phone_still_get_in(quiet_pair: Pair) -> None:
    pbx, carrier = quiet_pair.pbx, quiet_pair.carrier
    # The carrier, from its own address and port: recognised as the trunk, no challenge.
    async with (
        EventListener(pbx, "switchboard") as pbx_events,
        EventListener(carrier, "carrier") as carrier_events,
    ):
        status, outbound = await ari(carrier, "POST", "/channels",
                                     endpoint="PJSIP/2000@switchboard", app="carrier")
        assert status == 200, outbound
        start = await pbx_events.wait_for(of_type("StasisStart"))
        assert start["channel"]["name"].startswith("PJSIP/carrier-")
        await ari(carrier, "DELETE", f"/channels/{outbound['id']}")
        await carrier_events.wait_for(of_type("ChannelDestroyed", channel__id=outbound["id"]))
    # An agent's desk phone: its name alone gets a challenge; with its password it
    # registers and places a call (the agents' echo test).
    sip = ("127.0.0.1", pbx.sip_port)
    assert (await sip_request(sip, "INVITE", DESK_PHONE_SIP_USER, to="*43")).status == 401
    async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, sip) as phone:
        call = await phone.call("*43")
        await phone.wait_hears(call, "agent")  # its own voice, echoed
        await phone.hang_up(call)
