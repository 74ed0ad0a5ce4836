"""The test desk phone (tests.sip_phone) against the real PBX: what a desk phone does."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.asterisk_helpers import Pair, ari
from tests.sip_phone import SipError, SipPhone
from web.bench.rig import DESK_PHONE_PASSWORD, DESK_PHONE_SIP_USER

pytestmark = pytest.mark.integration


async def endpoint_state(pair: Pair) -> str:
    _, endpoint = await ari(pair.pbx, "GET", f"/endpoints/PJSIP/{DESK_PHONE_SIP_USER}")
    return str(endpoint["state"])


async def until_state(pair: Pair, state: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while await endpoint_state(pair) != state:
        assert time.monotonic() < deadline, f"the phone's endpoint never became {state}"
        await asyncio.sleep(0.1)


async def test_a_desk_phone_registers_is_qualified_calls_with_auth_and_unregisters(
    quiet_pair: Pair,
) -> None:
    pbx = ("127.0.0.1", quiet_pair.pbx.spec.ports.sip)
    async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, pbx) as phone:
        # Registered after the 401 challenge; online once it answered the PBX's OPTIONS.
        await until_state(quiet_pair, "online")
        # The agents' echo test: an INVITE the PBX challenges, then answers.
        call = await phone.call("*43")
        await phone.wait_hears(call, "agent")  # its own tone, echoed
        await phone.hang_up(call)
        assert call.ended_by == "phone"
    await until_state(quiet_pair, "offline")  # it unregistered on its way out


async def test_a_desk_phone_with_the_wrong_password_is_refused(quiet_pair: Pair) -> None:
    pbx = ("127.0.0.1", quiet_pair.pbx.spec.ports.sip)
    with pytest.raises(SipError) as refused:
        async with SipPhone(DESK_PHONE_SIP_USER, "not-the-password", pbx):
            pass
    assert refused.value.status in (401, 403)
    assert await endpoint_state(quiet_pair) == "offline"
