"""R10 of issue 16: media lost on a live call, on the caller's side and on the agent's.

What decides is the PBX's media timeout (``rtp_timeout`` of the PJSIP endpoints): 30 s
for trunks and desk phones, 5 s for browser phones (pbx.asterisk_config.InstanceSpec).
A loss shorter than it is a blip the call rides through: nothing ends, nobody is offered
the call again, both parties hear each other once packets flow. A loss that reaches it
ends the leg as lost: the caller's leg ends the call (with its outcome and the cause),
an agent's gives the caller back to the AI and offers the call again.

The caller's side is black-holed by freezing the carrier Asterisk (tests.faults.paused:
its SIP and RTP go silent together, as a dead link does); the agent's by a desk phone
that stops sending (tests.sip_phone). The 5 s blip runs on the product's own timeouts;
the 30 s and 120 s losses end at the timeout whatever their length, so they run on a PBX
whose timeout is a few seconds (the setting, not the length, is what decides).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.agents import Presence
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.store.models import Call
from pbx import runtime
from tests.faults import paused
from tests.integration.asterisk_helpers import assert_quiet
from tests.integration.desk_agent import bea_at_her_desk, bea_takes_a_call, handoff_is
from tests.waiting import until
from web.bench.rig import Pair, Rig, asterisk_pair, rig
from web.bench.world import World, local_world

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

BLIP_S = 5.0  # R10's short loss, against the product's 30 s timeout of trunks and phones
SHORT_RTP_TIMEOUT_S = 3  # stands for the 30 s timeout the 30 s and 120 s losses reach


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


@pytest_asyncio.fixture(scope="module")
async def short_pair(installation: runtime.Installation, state_dir: Path) -> AsyncIterator[Pair]:
    async with asterisk_pair(installation, state_dir, f"ml{os.getpid()}",
                             rtp_timeout=SHORT_RTP_TIMEOUT_S) as started:
        yield started


async def _ended(r: Rig, call_id: str) -> Call | None:
    async with r.store.transaction() as tx:
        call = await tx.calls.get(call_id)
    return call if call.state is CallState.ENDED else None


async def _state(r: Rig, call_id: str) -> CallState:
    async with r.store.transaction() as tx:
        return (await tx.calls.get(call_id)).state


# ---- a blip shorter than the timeout: the call rides through ----------------------------

async def test_a_callers_media_lost_for_5_s_keeps_the_call_with_the_ai(
    quiet_pair: Pair, world: World, tmp_path: Path,
) -> None:
    async with rig(quiet_pair.pbx, world, tmp_path / "db.sqlite") as r:
        placed = await r.place_call()
        await r.wait_hears(placed, "ai")
        async with paused(quiet_pair.carrier):
            await asyncio.sleep(BLIP_S)  # the loss itself: its length is the case
        back = time.monotonic()
        await r.wait_hears(placed, "ai", after=back, timeout=10)
        assert await _state(r, placed.call_id) is CallState.WITH_AI
        await r.hang_up_caller(placed)
        ended = await until(lambda: _ended(r, placed.call_id))
    assert ended.outcome is CallOutcome.COMPLETED_BY_AI


async def test_an_agents_desk_phone_silent_for_5_s_keeps_the_call_with_her(
    quiet_pair: Pair, world: World, tmp_path: Path,
) -> None:
    async with rig(quiet_pair.pbx, world, tmp_path / "db.sqlite") as r, \
            bea_at_her_desk(r) as bea:
        placed, handoff_id, call = await bea_takes_a_call(bea)
        bea.phone.stop_media(call)
        await asyncio.sleep(BLIP_S)  # the loss itself: its length is the case
        bea.phone.resume_media(call)
        back = time.monotonic()
        await r.wait_hears(placed, "agent", after=back, timeout=10)
        await bea.phone.wait_hears(call, "caller", after=back)
        assert not call.ended.is_set()
        assert await handoff_is(r, handoff_id, HandoffState.CONNECTED)
        async with r.store.transaction() as tx:
            assert len(list(await tx.handoffs.for_call(placed.call_id))) == 1  # no re-offer
        assert bea.phone.invites == 1
        await bea.phone.hang_up(call)
        ended = await until(lambda: _ended(r, placed.call_id))
    assert ended.outcome is CallOutcome.COMPLETED_BY_AGENT


# ---- a loss that reaches the timeout: the leg is lost ----------------------------------

@pytest.mark.parametrize("with_agent", [False, True], ids=["with_ai", "with_agent"])
async def test_a_callers_media_lost_past_the_timeout_ends_the_call_as_the_caller_gone(
    short_pair: Pair, tmp_path: Path, with_agent: bool,
) -> None:
    async with local_world(short_pair.carrier) as world, \
            rig(short_pair.pbx, world, tmp_path / "db.sqlite") as r, \
            bea_at_her_desk(r) as bea:
        if with_agent:
            placed, handoff_id, call = await bea_takes_a_call(bea)
        else:
            placed = await r.place_call()
            await r.wait_hears(placed, "ai")
        async with paused(short_pair.carrier):
            ended = await until(lambda: _ended(r, placed.call_id),
                                within=SHORT_RTP_TIMEOUT_S + 15)
        print(f"\nended: {ended.outcome} ({ended.end_cause})")
        if with_agent:
            assert ended.outcome is CallOutcome.COMPLETED_BY_AGENT
            await asyncio.wait_for(call.ended.wait(), 5)
            assert call.ended_by == "pbx"  # her phone was told the call is over
            assert await handoff_is(r, handoff_id, HandoffState.COMPLETED)
            async with r.store.transaction() as tx:
                agent = await tx.agents.get(bea.agent_id)
            assert agent.presence in (Presence.WRAP_UP, Presence.AVAILABLE)
        else:
            assert ended.outcome is CallOutcome.COMPLETED_BY_AI
        assert ended.end_cause is not None and "media" in ended.end_cause
    await assert_quiet(short_pair.pbx)
    # The carrier was frozen when the PBX sent its BYE: it learns of it from a
    # retransmission (up to 4 s apart) or its own media timeout, later on a loaded box.
    await assert_quiet(short_pair.carrier, settle=15.0)
