"""Business hours on real Asterisk: a carrier's caller rings the sales number on a
holiday, and the controller puts them through to sales' fallback number at once, with
no card offered to the agent who is on duty; a card for a queue closed today does the
same. With a voicemail fallback the caller hears a prompt and a beep and leaves a
message (the carrier's caller speaks its tone), kept in the call's recording, and the
call is a call-back request."""

from __future__ import annotations

import time
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from handoff.assistants import FallbackKind
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.hours import Hours
from handoff.live import CallStateConflict, OutOfHours, Timing
from handoff.queues import Strategy
from handoff.store.models import Call
from tests.integration.asterisk_helpers import Pair
from tests.waiting import until
from web.bench.audio import FRAME, TONES, present
from web.bench.rig import PlacedCall, Rig, rig
from web.bench.world import local_world

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def call_rig(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r,
    ):
        yield r


def _today_everywhere() -> list[str]:
    """Today wherever the site is: yesterday, today and tomorrow in UTC cover every zone's
    today."""
    today = datetime.now(UTC).date()
    return [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]


async def _closed_today(r: Rig, name: str, hours: list[str] | None = None) -> None:
    """Today is a holiday for the assistant ``name`` (open ``hours`` on other days)."""
    async with r.store.transaction() as tx:
        assistant = await tx.assistants.by_name(name)
        assert assistant is not None
        await tx.assistants.set_hours(assistant.id,
                                      Hours.parse(hours or [], _today_everywhere()))


async def _forwarded(r: Rig, call_id: str) -> None:
    async def forwarded() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(call_id)).state is CallState.FORWARDED

    await until(forwarded, why="the call never reached the fallback number")


async def _ended(r: Rig, call_id: str, within: float = 20,
                 why: str = "the call never ended") -> Call:
    async def ended() -> Call | None:
        async with r.store.transaction() as tx:
            call = await tx.calls.get(call_id)
        return call if call.outcome is not None else None

    return await until(ended, within, why=why)


async def test_a_call_on_a_holiday_goes_straight_to_the_fallback_number(
    call_rig: Rig,
) -> None:
    r = call_rig
    await _closed_today(r, "sales", ["mon-sun 00:00-24:00"])
    start = time.monotonic()
    placed = await r.place_call("2100")  # sales: its fallback is a number on the carrier

    await _forwarded(r, placed.call_id)
    # The fallback line answers and speaks (the world plays the agent's tone on it).
    await r.wait_hears(placed, "agent", after=start, timeout=10)
    await r.hang_up_caller(placed)

    await _ended(r, placed.call_id)
    async with r.store.transaction() as tx:
        call = await tx.calls.get(placed.call_id)
        handoffs = await tx.handoffs.for_call(placed.call_id)
    assert call.outcome is CallOutcome.FALLBACK_NUMBER
    assert handoffs == []  # nobody was offered a card: the office is closed


async def test_a_restarted_controller_leaves_the_caller_with_the_fallback_number(
    quiet_pair: Pair, tmp_path: Path,
) -> None:
    db = tmp_path / "switchboard.db"
    async with local_world(quiet_pair.carrier) as world:
        async with rig(quiet_pair.pbx, world, db, check_ledger=False) as first:
            await _closed_today(first, "sales")
            placed = await first.place_call("2100")

            await _forwarded(first, placed.call_id)
            forward = first.control.calls[placed.call_id].forward
            assert forward is not None
        # The controller is gone (as after a crash); Asterisk keeps the conversation.
        async with rig(quiet_pair.pbx, world, db) as second:
            live = second.control.calls[placed.call_id]
            # Adopted as it was: the fallback party keeps the caller, no AI over them.
            assert (live.forward, live.forward_answered, live.ai) == (forward, True, None)
            await second.wait_hears(placed, "agent", after=time.monotonic(), timeout=10)
            await second.hang_up_caller(placed)

            await _ended(second, placed.call_id)
            async with second.store.transaction() as tx:
                call = await tx.calls.get(placed.call_id)
    assert call.outcome is CallOutcome.FALLBACK_NUMBER


async def test_a_card_for_a_closed_queue_puts_the_caller_through_to_the_fallback_number(
    call_rig: Rig,
) -> None:
    r = call_rig
    async with r.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
        assert sales is not None
        desk = await tx.queues.create(
            name="sales-desk", strategy=Strategy.OFFER_ALL, ring_s=20, max_wait_s=60,
            service_level_s=20, no_answer_limit=3,
            holidays=_today_everywhere())
        await tx.queues.set_members(desk.id, [(r.agent_id, 3)])
        await tx.queues.set_assistants(desk.id, [sales.id])
    placed = await r.place_call("2100")  # sales itself is open: the AI answers
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="x")

    # Ada is at her desk, but her queue is closed today: no card, the outside line.
    await _forwarded(r, placed.call_id)
    async with r.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    assert (handoff.state, handoff.failure_reason) == (HandoffState.FAILED,
                                                       FailureReason.NO_AGENTS)
    await r.hang_up_caller(placed)

    assert (await _ended(r, placed.call_id)).outcome is CallOutcome.FALLBACK_NUMBER


async def _voicemail_fallback(r: Rig, *, closed: bool) -> None:
    """The receptionist's fallback is a voicemail; ``closed``: today is a holiday."""
    async with r.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_handoff_rules(
            receptionist.id, handoff_level=receptionist.handoff_level, accept_timeout_s=5,
            fallback_kind=FallbackKind.VOICEMAIL, fallback_number=None)
    if closed:
        await _closed_today(r, "receptionist")


async def _call_of(r: Rig, placed: PlacedCall) -> str:
    async def found() -> str | None:
        return next((c.call_id for c in r.control.calls.values()
                     if c.caller_number == placed.caller), None)

    return await until(found, 10, why="the call never reached the controller")


async def _voicemail_began(r: Rig, call_id: str) -> datetime:
    async def began() -> datetime | None:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(call_id)).voicemail_at

    return await until(began, 30, why="the caller never got to leave a message")


def _message(call: Call) -> dict[str, int]:
    """Who the recording holds from the beep on: the message."""
    assert call.recording_path and call.voicemail_at and call.answered_at
    with wave.open(call.recording_path) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    start = round((call.voicemail_at - call.answered_at).total_seconds() * 8000)
    counts = dict.fromkeys(TONES, 0)
    for at in range(start, len(samples) - FRAME, FRAME):
        for who in present(samples[at: at + FRAME]):
            counts[who] += 1
    return counts


async def test_out_of_hours_the_caller_leaves_a_voicemail_that_becomes_a_call_back(
    quiet_pair: Pair, tmp_path: Path,
) -> None:
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db",
            Timing(voicemail_max_s=2)) as r,
    ):
        await _voicemail_fallback(r, closed=True)
        start = time.monotonic()
        placed = await r.place_call("2000", wait_ai=False)
        call_id = await _call_of(r, placed)

        async def prompted() -> bool:  # the spoken prompt, before any message
            return any(who == "~" for _, who in
                       await r.world.frames(placed.caller, start, time.monotonic()))

        await until(prompted, 15, why="the caller never heard the voicemail prompt")
        await _voicemail_began(r, call_id)
        # The caller talks past the bound: the call is ended for them.

        await _ended(r, call_id, 20, why="the voicemail never reached its bound")
        async with r.store.transaction() as tx:
            call = await tx.calls.get(call_id)
            handoffs = await tx.handoffs.for_call(call_id)
            notes = [n.text for n in await tx.notes.for_call(call_id)]
            # The receptionist has no queue: any agent may play it and call back.
            ada_hears = await tx.history.may_hear(call_id, r.agent_id)
    assert call.outcome is CallOutcome.CALLBACK_REQUESTED
    assert handoffs == [] and notes == ["Callback requested: called out of hours."]
    assert call.ai_channel_id is None  # no AI at all: the prompt at once
    heard = _message(call)
    assert heard["caller"] > 25 and heard["ai"] == 0, heard  # the caller's words, kept
    assert ada_hears


async def test_nobody_in_time_the_caller_leaves_a_voicemail_and_hangs_up(
    call_rig: Rig,
) -> None:
    r = call_rig
    await _voicemail_fallback(r, closed=False)
    async with r.store.transaction() as tx:
        await tx.agents.set_duty(r.agent_id, False)  # nobody on duty: no card to take
    placed = await r.place_call("2000")  # open: the AI answers first
    await r.wait_hears(placed, "ai")
    await r.control.request_handoff(placed.call_id, reason="caller_asked", summary="x")
    await _voicemail_began(r, placed.call_id)
    live = r.control.calls[placed.call_id]
    assert live.ai is None  # the AI stepped out for the message
    # An engine asking again now would cut the message short with a card: refused.
    with pytest.raises(CallStateConflict):
        await r.control.request_handoff(placed.call_id, reason="caller_asked", summary="x")
    await r.hang_up_caller(placed)

    await _ended(r, placed.call_id)
    async with r.store.transaction() as tx:
        call = await tx.calls.get(placed.call_id)
        (handoff,) = await tx.handoffs.for_call(placed.call_id)
    assert call.outcome is CallOutcome.CALLBACK_REQUESTED
    assert (handoff.state, handoff.failure_reason) == (HandoffState.FAILED,
                                                       FailureReason.NO_AGENTS)
    assert call.voicemail_at is not None and call.recording_path


@pytest.mark.parametrize("stopped", ["mid_message", "mid_prompt"])
async def test_a_restarted_controller_lets_the_caller_finish_their_voicemail(
    quiet_pair: Pair, tmp_path: Path, stopped: str,
) -> None:
    db = tmp_path / "switchboard.db"
    async with local_world(quiet_pair.carrier) as world:
        async with rig(quiet_pair.pbx, world, db, Timing(voicemail_max_s=60),
                       check_ledger=False) as first:
            await _voicemail_fallback(first, closed=True)
            placed = await first.place_call("2000", wait_ai=False)
            call_id = await _call_of(first, placed)
            if stopped == "mid_message":
                await _voicemail_began(first, call_id)
            else:
                # Gone while the prompt plays: the fallback chose voicemail, no beep yet.
                def in_voicemail() -> bool:
                    live = first.control.calls.get(call_id)
                    return live is not None and live.voicemail

                await until(in_voicemail, why="the fallback never sent the caller to voicemail")
                async with first.store.transaction() as tx:
                    assert (await tx.calls.get(call_id)).voicemail_at is None
        # The controller is gone mid-message (as after a crash); Asterisk keeps the caller.
        async with rig(quiet_pair.pbx, world, db, Timing(voicemail_max_s=3)) as second:
            assert call_id in second.control.calls
            # No AI comes back over the message (mid-prompt: the prompt again, then the
            # beep), and its bound still ends the call.
            await _voicemail_began(second, call_id)

            await _ended(second, call_id, 20, why="the adopted voicemail never ended")
            async with second.store.transaction() as tx:
                call = await tx.calls.get(call_id)
    assert call.outcome is CallOutcome.CALLBACK_REQUESTED
    assert call.ai_channel_id is None
    heard = _message(call)
    # An AI back over the message would be in every frame of it; a frame or two at its
    # edges (the prompt's and the beep's onsets, the restart) can fool the tone detector.
    assert heard["caller"] > 25 and heard["ai"] <= 2, heard


async def test_after_a_restart_a_person_asked_for_out_of_hours_notes_no_second_call_back(
    quiet_pair: Pair, tmp_path: Path,
) -> None:
    db = tmp_path / "switchboard.db"
    async with local_world(quiet_pair.carrier) as world:
        async with rig(quiet_pair.pbx, world, db, check_ledger=False) as first:
            await _closed_today(first, "receptionist")  # its fallback: a call-back request
            placed = await first.place_call("2000")

            async def noted() -> bool:
                async with first.store.transaction() as tx:
                    return bool(await tx.notes.for_call(placed.call_id))

            await until(noted)
        async with rig(quiet_pair.pbx, world, db) as second:
            with pytest.raises(OutOfHours):
                await second.control.request_handoff(placed.call_id, reason="caller_asked",
                                                     summary="x")
            async with second.store.transaction() as tx:
                notes = [n.text for n in await tx.notes.for_call(placed.call_id)]
            assert notes == ["Callback requested: called out of hours."]
            await second.hang_up_caller(placed)

            await _ended(second, placed.call_id)
