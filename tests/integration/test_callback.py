"""Calling a caller back: the agent's phone first, then the caller over the trunk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.callback import BadNumber, Callbacks
from tests.bench.audio import FRAME, present, ulaw_decode
from tests.bench.rig import FALLBACK_NUMBER, Rig, local_world, rig
from tests.integration.asterisk_helpers import Pair

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def cb_rig(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[tuple[Rig, Callbacks]]:
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r,
    ):
        callbacks = Callbacks(r.pbx_ari, r.store, trunk="carrier", ring_timeout_s=5)
        r.control.leave_alone(callbacks.owned)  # as the product wires them
        try:
            yield r, callbacks
        finally:
            await callbacks.close()


def voiced_agent_frames(probe: object, after: float) -> int:
    count = 0
    for packet in probe.received:  # type: ignore[attr-defined]
        if packet.at >= after and "agent" in present(ulaw_decode(packet.payload)[:FRAME]):
            count += 1
    return count


async def test_call_back_rings_the_agent_then_connects_the_caller_over_the_trunk(
    cb_rig: tuple[Rig, Callbacks],
) -> None:
    r, callbacks = cb_rig
    # The caller to call back is the carrier's line 5001: it answers and speaks.
    cb = await callbacks.call_back(FALLBACK_NUMBER, agent_id=r.agent_id, sip_user="desk-ada",
                                   actor="ada")
    await asyncio.wait_for(cb.agent_answered.wait(), 5)
    assert len(r.world.agent_probes) == 1  # only Ada's phone so far: the caller waits
    await asyncio.wait_for(cb.connected.wait(), 5)
    started = time.monotonic()
    await asyncio.sleep(1.0)
    ada, caller = r.world.agent_probes
    # Each side hears the other (both phones on the carrier speak the agent's tone).
    assert voiced_agent_frames(ada, started) > 20
    assert voiced_agent_frames(caller, started) > 20
    async with r.store.transaction() as tx:
        assert [e.action for e in await tx.audit.recent()] == ["call_back"]

    # The agent hangs up: the caller's leg goes with it.
    await r.pbx_ari.channels.hangup(cb.agent_leg)
    await asyncio.wait_for(cb.ended.wait(), 5)
    assert not callbacks.active


async def test_a_reconciliation_leaves_a_call_back_in_progress_alone(
    cb_rig: tuple[Rig, Callbacks],
) -> None:
    # A lost event socket makes the controller reconcile: the call-back's legs and
    # bridge are a conversation in progress, not leftovers.
    r, callbacks = cb_rig
    cb = await callbacks.call_back(FALLBACK_NUMBER, agent_id=r.agent_id, sip_user="desk-ada",
                                   actor="ada")
    await asyncio.wait_for(cb.connected.wait(), 5)
    await r.control.reconcile()
    started = time.monotonic()
    await asyncio.sleep(1.0)
    assert not cb.ended.is_set()
    ada, caller = r.world.agent_probes
    assert voiced_agent_frames(ada, started) > 20  # each still hears the other
    assert voiced_agent_frames(caller, started) > 20
    await r.pbx_ari.channels.hangup(cb.agent_leg)
    await asyncio.wait_for(cb.ended.wait(), 5)


@pytest.mark.parametrize("number", ["", "12", "5001&PJSIP/999@carrier", "5001@other",
                                    "+1 555 abc", "1234567890123456"])
async def test_call_back_refuses_what_is_not_a_plain_number(
    cb_rig: tuple[Rig, Callbacks], number: str,
) -> None:
    _, callbacks = cb_rig
    with pytest.raises(BadNumber):
        await callbacks.call_back(number, agent_id=1, sip_user="desk-ada", actor="ada")
    assert not callbacks.active
