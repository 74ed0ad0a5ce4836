"""Who the PBX lets in over SIP, seen from the network: real SIP requests on loopback."""

from __future__ import annotations

import pytest

from tests.bench.rig import DESK_PHONE_SIP_USER
from tests.integration.asterisk_helpers import Pair, sip_request

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
