"""Calling a caller back: the agent's phone first, then the caller over the trunk."""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.agents import Presence
from handoff.callback import BadNumber, Callbacks
from handoff.calls import CallDirection, CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.store.history_repo import CallFilter
from tests.integration.asterisk_helpers import Pair
from tests.waiting import until
from web.bench.audio import FRAME, RtpProbe, present, ulaw_decode
from web.bench.rig import Rig, rig
from web.bench.world import AGENT_PHONE_NUMBER, FALLBACK_NUMBER, local_world

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def cb_rig(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[tuple[Rig, Callbacks]]:
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r,
    ):
        yield r, r.live.callbacks


def voiced_agent_frames(probe: RtpProbe, after: float) -> int:
    count = 0
    for packet in probe.received:
        if packet.at >= after and "agent" in present(ulaw_decode(packet.payload)[:FRAME]):
            count += 1
    return count


async def talking_both_ways(r: Rig) -> None:
    """For the next second, each side hears the other (both phones on the carrier speak
    the agent's tone)."""
    started = time.monotonic()
    await asyncio.sleep(1.0)  # the second listened to
    ada, caller = r.world.agent_probes
    assert voiced_agent_frames(ada, started) > 20
    assert voiced_agent_frames(caller, started) > 20


async def test_call_back_rings_the_agent_then_connects_the_caller_over_the_trunk(
    cb_rig: tuple[Rig, Callbacks], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="handoff.callback")
    r, callbacks = cb_rig
    # The caller to call back is the carrier's line 5001: it answers and speaks.
    cb = await callbacks.call_back(FALLBACK_NUMBER, agent_id=r.agent_id, endpoint="desk-ada",
                                   actor="ada")
    await asyncio.wait_for(cb.agent_answered.wait(), 5)
    assert len(r.world.agent_probes) == 1  # only Ada's phone so far: the caller waits
    await asyncio.wait_for(cb.connected.wait(), 5)
    await talking_both_ways(r)
    async with r.store.transaction() as tx:
        assert [e.action for e in await tx.audit.recent()] == ["call_back"]

    # The agent hangs up: the caller's leg goes with it.
    await r.pbx_ari.channels.hangup(cb.agent_leg)
    await asyncio.wait_for(cb.ended.wait(), 5)
    assert not callbacks.active
    # The number called back is the caller's: logged masked, never in full.
    said = [r.getMessage() for r in caplog.records if r.name == "handoff.callback"]
    assert any("connected" in line for line in said)
    assert not any(FALLBACK_NUMBER in line for line in said)


    async def lines() -> set[tuple[str, bool]] | None:
        async with r.store.transaction() as tx:
            rows = await tx.quality.for_call(cb.call_id)
        return {(row.leg, row.handoff_id == cb.handoff_id) for row in rows} \
            if len(rows) == 2 else None

    # Both lines have their quality record: the agent's under the call-back's handoff.
    assert await until(lines) == {("caller", False), ("agent", True)}


async def test_a_reconciliation_leaves_a_call_back_in_progress_alone(
    cb_rig: tuple[Rig, Callbacks],
) -> None:
    # A lost event socket makes the controller reconcile: the call-back's legs and
    # bridge are a conversation in progress, not leftovers.
    r, callbacks = cb_rig
    cb = await callbacks.call_back(FALLBACK_NUMBER, agent_id=r.agent_id, endpoint="desk-ada",
                                   actor="ada")
    await asyncio.wait_for(cb.connected.wait(), 5)
    await r.control.reconcile()
    await talking_both_ways(r)
    assert not cb.ended.is_set()
    await r.pbx_ari.channels.hangup(cb.agent_leg)
    await asyncio.wait_for(cb.ended.wait(), 5)


async def test_a_call_back_is_a_call_in_the_ledger_and_in_the_agents_history(
    cb_rig: tuple[Rig, Callbacks],
) -> None:
    r, callbacks = cb_rig
    r.control.timing.wrap_up_s = 60  # as the product's desk.wrap_up_s would
    cb = await callbacks.call_back(FALLBACK_NUMBER, agent_id=r.agent_id, endpoint="desk-ada",
                                   actor="ada")
    await asyncio.wait_for(cb.connected.wait(), 5)
    async with r.store.transaction() as tx:
        call = await tx.calls.get(cb.call_id)
        handoff = await tx.handoffs.get(cb.handoff_id)
    assert call.direction is CallDirection.OUTBOUND and call.state is CallState.WITH_AGENT
    assert call.caller_number == FALLBACK_NUMBER
    assert handoff.state is HandoffState.CONNECTED and handoff.accepted_by == r.agent_id
    async with r.store.transaction() as tx:
        assert r.agent_id in await tx.agents.busy_agent_ids()  # no card while on it
    await asyncio.sleep(1.2)  # they talk: the recording checked below holds over a second
    await r.pbx_ari.channels.hangup(cb.caller_leg)  # the person hangs up
    await asyncio.wait_for(cb.ended.wait(), 5)
    async with r.store.transaction() as tx:
        call = await tx.calls.get(cb.call_id)
        rows = await tx.history.calls(CallFilter(handled_by=r.agent_id))
    assert call.state is CallState.ENDED and call.outcome is CallOutcome.COMPLETED_BY_AGENT
    assert call.answered_at is not None
    # Recorded like every call, into the product's recordings folder.
    assert call.recording_path and call.recording_path.startswith(str(r.control.recordings))
    with wave.open(call.recording_path) as recording:
        assert recording.getnframes() > 8000  # over a second of the conversation
    assert [(row.call.id, row.agent.id if row.agent else None) for row in rows] == [
        (cb.call_id, r.agent_id)]
    # After the call, Ada wraps up before the next card, as after any call.
    async def wrapping_up() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.agents.get(r.agent_id)).presence is Presence.WRAP_UP

    await until(wrapping_up, 5, why="Ada never went into wrap-up")


async def test_a_call_back_nobody_answers_is_recorded_as_not_answered(
    cb_rig: tuple[Rig, Callbacks],
) -> None:
    r, callbacks = cb_rig
    # Sam's desk phone answers at once; the number called (Ada's line, set to ring
    # without answer) never picks up: the dial gives up after the ring timeout.
    await r.world.set_agent_phone("ring")
    cb = await callbacks.call_back(AGENT_PHONE_NUMBER, agent_id=r.supervisor_id,
                                   endpoint="desk-sam", actor="sam")
    await asyncio.wait_for(cb.agent_answered.wait(), 5)
    await asyncio.wait_for(cb.ended.wait(), 15)
    async with r.store.transaction() as tx:
        call = await tx.calls.get(cb.call_id)
        handoff = await tx.handoffs.get(cb.handoff_id)
    assert call.outcome is CallOutcome.NOT_ANSWERED
    assert handoff.state is HandoffState.FAILED
    assert handoff.failure_reason is FailureReason.NOT_ANSWERED


async def test_a_restarted_controller_takes_up_a_call_back_in_progress(
    cb_rig: tuple[Rig, Callbacks],
) -> None:
    r, callbacks = cb_rig
    cb = await callbacks.call_back(FALLBACK_NUMBER, agent_id=r.agent_id, endpoint="desk-ada",
                                   actor="ada")
    await asyncio.wait_for(cb.connected.wait(), 5)
    # A restarted controller knows nothing but the ledger and what Asterisk reports.
    callbacks.active.clear()
    callbacks._by_leg.clear()
    # Reconciliation takes the call-backs up first, then leaves their legs alone.
    await r.control.reconcile()
    [adopted] = callbacks.active.values()
    assert adopted is not cb
    assert adopted.call_id == cb.call_id and adopted.state == "connected"
    await talking_both_ways(r)
    await r.pbx_ari.channels.hangup(adopted.agent_leg)
    await asyncio.wait_for(adopted.ended.wait(), 5)
    async with r.store.transaction() as tx:
        call = await tx.calls.get(cb.call_id)
    assert call.outcome is CallOutcome.COMPLETED_BY_AGENT


@pytest.mark.parametrize("number", ["", "12", "5001&PJSIP/999@carrier", "5001@other",
                                    "+1 555 abc", "1234567890123456"])
async def test_call_back_refuses_what_is_not_a_plain_number(
    cb_rig: tuple[Rig, Callbacks], number: str,
) -> None:
    _, callbacks = cb_rig
    with pytest.raises(BadNumber):
        await callbacks.call_back(number, agent_id=1, endpoint="desk-ada", actor="ada")
    assert not callbacks.active
