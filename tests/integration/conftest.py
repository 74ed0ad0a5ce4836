"""Real Asterisk instances for integration tests.

The PBX and the carrier are started once per session (the embedded runtime is built
on first use) and each test is checked afterwards for channels and bridges it left
behind. Nothing here fakes Asterisk.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pbx import runtime
from pbx.asterisk_config import InboundRoute, SipAgent, SipTrunk
from tests.bench.rig import AGENT_PHONE_NUMBER
from tests.integration.asterisk_helpers import Pair, assert_quiet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def installation() -> runtime.Installation:
    # No skip: if Asterisk cannot be had, the integration suite fails and says why.
    return runtime.locate()


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest_asyncio.fixture(scope="session")
async def pair(installation: runtime.Installation, state_dir: Path) -> AsyncIterator[Pair]:
    """A Switchboard PBX and a carrier Asterisk with a SIP trunk between them."""
    tag = f"t{os.getpid()}"
    # Ports first, so that each side's trunk can name the other's SIP port.
    pbx_ports = runtime.allocate_ports(runtime.PortRequest())
    taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
    carrier_ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken)
    pbx = runtime.new_instance(
        installation,
        f"{tag}-pbx",
        state_dir,
        ports=pbx_ports,
        trunks=(SipTrunk("carrier", "127.0.0.1", carrier_ports.sip),),
        routes=(InboundRoute("2000", "receptionist"), InboundRoute("_21XX", "sales")),
        # Ada's desk phone is played by the carrier: it answers 7001 there.
        agents=(
            SipAgent(
                "desk-ada", "desk-ada-secret", "deskphone", "Ada",
                contact=f"sip:{AGENT_PHONE_NUMBER}@127.0.0.1:{carrier_ports.sip}",
            ),
        ),
    )
    carrier = runtime.new_instance(
        installation,
        f"{tag}-carrier",
        state_dir,
        ports=carrier_ports,
        app="carrier",
        trunks=(SipTrunk("switchboard", "127.0.0.1", pbx_ports.sip),),
        routes=(InboundRoute("_5XXX", "fallback"), InboundRoute("_7XXX", "agentphone")),
    )
    await pbx.start()
    try:
        await carrier.start()
    except BaseException:
        await pbx.stop()
        raise
    yield Pair(pbx=pbx, carrier=carrier)
    await carrier.stop()
    await pbx.stop()


@pytest_asyncio.fixture
async def quiet_pair(pair: Pair) -> AsyncIterator[Pair]:
    """The pair, checked after the test: no channel or bridge may be left on either side."""
    yield pair
    await assert_quiet(pair.pbx)
    await assert_quiet(pair.carrier)
