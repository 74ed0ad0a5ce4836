"""The built-in receptionist on real Asterisk: it answers over AudioSocket, learns of
calls from the events stream, and asks for a person through the HTTP control API,
exactly as an external engine would."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from handoff.assistants import FallbackKind, HandoffLevel
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.hours import Hours
from handoff.live.legs import role_of
from handoff.receptionist import PROMPTS, Receptionist, make_prompts
from pbx.audiosocket import FRAME_BYTES, Kind, encode
from tests.integration.ai_rig import ASSISTANT, AiRig, EngineMaker, ai_rig
from tests.integration.asterisk_helpers import Pair
from tests.waiting import until
from web.bench.audio import MIN_RMS, rms

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("prompts")
    return {name: path.read_bytes() for name, path in make_prompts(folder).items()}


def receptionist_maker(prompts: dict[str, bytes]) -> EngineMaker:
    async def make(api_base: str, token: str) -> Receptionist:
        receptionist = Receptionist(api_base=api_base, token=token, prompts=prompts)
        await receptionist.start()
        await receptionist.wait_ready()
        return receptionist

    return make


@pytest_asyncio.fixture
async def desk(quiet_pair: Pair, tmp_path: Path, prompts: dict[str, bytes]) -> AsyncIterator[AiRig]:
    async with ai_rig(quiet_pair, tmp_path / "switchboard.db", receptionist_maker(prompts)) as r:
        yield r


def said(name: str) -> tuple[str, str]:
    return ("ai", PROMPTS[name])


async def has_line(r: AiRig, call_id: str, line: tuple[str, str]) -> bool:
    return line in await r.transcript(call_id)


async def test_prompts_are_made_once_as_8khz_audio(tmp_path: Path) -> None:
    first = make_prompts(tmp_path)
    made = {name: path.stat().st_mtime_ns for name, path in first.items()}
    assert make_prompts(tmp_path) == first
    assert {name: path.stat().st_mtime_ns for name, path in first.items()} == made
    # Spoken prompts of a few seconds: 16 000 bytes per second of slin 8 kHz.
    assert all(16_000 < path.stat().st_size < 16_000 * 15 for path in first.values())


async def test_caller_who_presses_0_gets_a_handoff_offered_through_the_api(desk: AiRig) -> None:
    r = desk
    placed = await r.place_call()
    started = time.monotonic()
    await until(lambda: has_line(r, placed.call_id, said("greeting")))
    await until(lambda: _heard_voice(r, placed.caller, started, seconds=0.5))

    await r.press(placed, "0")

    async def offered() -> bool:
        async with r.store.transaction() as tx:
            handoffs = await tx.handoffs.for_call(placed.call_id)
        return [h.state for h in handoffs] == [HandoffState.OFFERED]

    await until(offered)
    await until(lambda: has_line(r, placed.call_id, said("connecting")))
    transcript = await r.transcript(placed.call_id)
    assert transcript[:3] == [said("greeting"), ("caller", "[pressed 0]"), said("connecting")]
    async with r.store.transaction() as tx:
        (handoff,) = await tx.handoffs.for_call(placed.call_id)
    assert handoff.reason == "caller_asked" and handoff.summary
    assert await r.call_state_is(placed.call_id, CallState.HANDOFF_PENDING)
    await r.hang_up(placed)


async def test_other_digits_go_into_the_transcript_without_a_handoff(desk: AiRig) -> None:
    r = desk
    placed = await r.place_call()
    await until(lambda: has_line(r, placed.call_id, said("greeting")))
    await r.press(placed, "7")
    await until(lambda: has_line(r, placed.call_id, ("caller", "[pressed 7]")))
    async with r.store.transaction() as tx:
        assert list(await tx.handoffs.for_call(placed.call_id)) == []
    await r.hang_up(placed)


async def test_when_nobody_accepts_in_time_the_receptionist_says_so(
    quiet_pair: Pair, tmp_path: Path, prompts: dict[str, bytes]
) -> None:
    async with ai_rig(quiet_pair, tmp_path / "db.sqlite", receptionist_maker(prompts),
                      accept_timeout_s=1) as r:
        placed = await r.place_call()
        await until(lambda: has_line(r, placed.call_id, said("greeting")))
        await r.press(placed, "0")
        await until(lambda: has_line(r, placed.call_id, said("connecting")))
        await until(lambda: has_line(r, placed.call_id, said("nobody")))
        assert await r.call_state_is(placed.call_id, CallState.WITH_AI)
        await r.hang_up(placed)


async def test_with_nobody_on_duty_the_caller_hears_nobody_last(
    quiet_pair: Pair, tmp_path: Path, prompts: dict[str, bytes]
) -> None:
    async with ai_rig(quiet_pair, tmp_path / "db.sqlite", receptionist_maker(prompts),
                      agent_on_duty=False) as r:
        placed = await r.place_call()
        await until(lambda: has_line(r, placed.call_id, said("greeting")))
        await r.press(placed, "0")
        await until(lambda: has_line(r, placed.call_id, said("nobody")))
        # The failure can overtake the HTTP answer to the request; "connecting" must
        # then not follow it. Something that must not happen, and the engine gives no
        # sign of having had its answer: the test listens for a while instead.
        await asyncio.sleep(0.3)
        ai_lines = [text for speaker, text in await r.transcript(placed.call_id)
                    if speaker == "ai"]
        assert ai_lines[-1] == PROMPTS["nobody"]
        await r.hang_up(placed)


async def test_back_from_the_agent_the_receptionist_welcomes_the_caller_again(
    desk: AiRig,
) -> None:
    r = desk
    placed = await r.place_call()
    await until(lambda: has_line(r, placed.call_id, said("greeting")))
    await r.press(placed, "0")

    async def handoff_open() -> bool:
        return r.control.calls[placed.call_id].handoff_id is not None

    await until(handoff_open)
    handoff_id = r.control.calls[placed.call_id].handoff_id
    assert handoff_id is not None
    await r.control.accept(handoff_id, r.agent_id)
    await until(lambda: r.call_state_is(placed.call_id, CallState.WITH_AGENT))

    await r.control.return_to_ai(placed.call_id)
    # A new AudioSocket stream for the same call; the returned_to_ai event picks the words.
    await until(lambda: has_line(r, placed.call_id, said("back")))
    transcript = await r.transcript(placed.call_id)
    assert transcript.count(said("greeting")) == 1
    await r.hang_up(placed)


async def _heard_voice(r: AiRig, caller: str, since: float, seconds: float) -> bool:
    """The caller's phone received at least ``seconds`` of voiced audio (not a tone)."""
    frames = await r.world.frames(caller, since, time.monotonic())
    return sum(1 for _, who in frames if who == "~") * 0.02 >= seconds


async def test_a_slow_join_costs_the_caller_no_word_of_the_greeting(
    desk: AiRig, prompts: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asterisk connects the AI leg's stream before the controller has put the leg in
    the call's bridge; what the engine says in between is read and thrown away. So the
    receptionist speaks once it hears the call, and a controller slow to bridge the leg
    (a loaded box) costs the caller a moment's wait, not the start of the greeting."""
    r = desk
    slow_s = 1.5
    _slow_ai_join(r, monkeypatch, slow_s)
    started = time.monotonic()
    placed = await r.place_call()
    await until(lambda: has_line(r, placed.call_id, said("greeting")), 10)
    greeting = prompts["greeting"]
    voiced = [i for i in range(0, len(greeting), FRAME_BYTES)
              if rms(np.frombuffer(greeting[i:i + FRAME_BYTES], dtype=np.int16)) >= MIN_RMS]
    spoken_s = (voiced[-1] - voiced[0]) / FRAME_BYTES * 0.02
    await asyncio.sleep(slow_s + spoken_s + 1.0)
    heard = [at for at, who in await r.world.frames(placed.caller, started, time.monotonic())
             if who != "-"]
    assert heard, "the caller heard nothing of the greeting"
    # All of it, give or take a few frames of arrival jitter on a loaded machine (here
    # exactly); a greeting begun before the leg joined loses the slow join's 1.5 s.
    assert heard[-1] - heard[0] >= spoken_s - 0.1, (heard[-1] - heard[0], spoken_s)
    await r.hang_up(placed)


async def test_a_key_pressed_before_the_ai_is_in_the_call_reaches_it(
    desk: AiRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller who presses 0 at once, while the AI's leg is still on its way into the
    call's bridge (slow here), is not ignored: the key reaches the AI once it is in."""
    r = desk
    _slow_ai_join(r, monkeypatch, 1.5)
    placed = await r.place_call(wait_ai=False)

    async def ai_on_its_way() -> bool:
        return any(c.caller_number == placed.caller and c.ai_joining and not c.ai
                   for c in r.control.calls.values())

    await until(ai_on_its_way, 10)
    await r.press(placed, "0")
    placed.call_id = await r._wait_call_with_ai(placed.caller)
    await until(lambda: has_line(r, placed.call_id, ("caller", "[pressed 0]")), 10,
                why="the key pressed before the AI was in the call never reached it")

    async def offered() -> bool:
        async with r.store.transaction() as tx:
            return bool(await tx.handoffs.for_call(placed.call_id))

    await until(offered)
    await r.hang_up(placed)


def _slow_ai_join(r: AiRig, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The controller puts each AI leg in the call's bridge ``seconds`` late, as a loaded
    box may: Asterisk has connected the leg's stream meanwhile."""
    add_channel = r.pbx_ari.bridges.add_channel

    async def slowly_for_the_ai(bridge_id: str, channel: str | list[str], **kw: Any) -> None:
        if isinstance(channel, str) and role_of(channel) == "ai":
            await asyncio.sleep(seconds)
        await add_channel(bridge_id, channel, **kw)

    monkeypatch.setattr(r.pbx_ari.bridges, "add_channel", slowly_for_the_ai)


async def test_a_stream_for_a_call_nobody_announced_is_refused(desk: AiRig) -> None:
    receptionist = desk.ai
    assert isinstance(receptionist, Receptionist)
    receptionist.grace_s = 0.2
    host, port = receptionist.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(encode(Kind.UUID, uuid.uuid4().bytes))
    await writer.drain()
    # Closed after the grace, having sent no audio (at most a hang-up frame).
    data = await asyncio.wait_for(reader.read(), 3)
    assert data in (b"", encode(Kind.HANGUP))
    writer.close()


async def _level(r: AiRig, level: HandoffLevel) -> None:
    async with r.store.transaction() as tx:
        assistant = await tx.assistants.by_name(ASSISTANT)
        assert assistant is not None
        await tx.assistants.set_handoff_rules(
            assistant.id, handoff_level=level, accept_timeout_s=30,
            fallback_kind=FallbackKind.AI_CALLBACK, fallback_number=None)


async def test_under_ai_only_0_says_a_person_is_not_available(desk: AiRig) -> None:
    r = desk
    await _level(r, HandoffLevel.AI_ONLY)
    placed = await r.place_call()
    await until(lambda: has_line(r, placed.call_id, said("greeting")))
    await r.press(placed, "0")
    await until(lambda: has_line(r, placed.call_id, said("unavailable")))
    async with r.store.transaction() as tx:
        assert list(await tx.handoffs.for_call(placed.call_id)) == []
    assert await r.call_state_is(placed.call_id, CallState.WITH_AI)
    await r.hang_up(placed)


async def test_under_ai_first_0_asks_first_and_a_second_0_gets_a_person(desk: AiRig) -> None:
    r = desk
    await _level(r, HandoffLevel.AI_FIRST)
    placed = await r.place_call()
    await until(lambda: has_line(r, placed.call_id, said("greeting")))
    await r.press(placed, "0")
    await until(lambda: has_line(r, placed.call_id, said("ask_first")))
    async with r.store.transaction() as tx:
        assert list(await tx.handoffs.for_call(placed.call_id)) == []
    await r.press(placed, "0")
    await until(lambda: has_line(r, placed.call_id, said("connecting")))
    async with r.store.transaction() as tx:
        (handoff,) = await tx.handoffs.for_call(placed.call_id)
    assert handoff.state is HandoffState.OFFERED
    assert handoff.summary is not None and "Problem: The caller pressed 0 again" in handoff.summary
    await r.hang_up(placed)


async def test_out_of_hours_the_receptionist_says_it_is_closed_and_notes_the_call(
    desk: AiRig,
) -> None:
    r = desk
    await _level(r, HandoffLevel.BALANCED)  # its fallback: a call-back request
    today = datetime.now(UTC).date()
    async with r.store.transaction() as tx:
        assistant = await tx.assistants.by_name(ASSISTANT)
        assert assistant is not None
        await tx.assistants.set_hours(assistant.id, Hours.parse(
            [], [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]))
    placed = await r.place_call()
    await until(lambda: has_line(r, placed.call_id, said("closed")))
    assert not await has_line(r, placed.call_id, said("greeting"))

    async def noted() -> bool:
        async with r.store.transaction() as tx:
            return [n.text for n in await tx.notes.for_call(placed.call_id)] == [
                "Callback requested: called out of hours."]

    await until(noted)
    await r.hang_up(placed)


async def test_out_of_hours_0_opens_no_card_and_the_fallback_stands(desk: AiRig) -> None:
    r = desk
    await _level(r, HandoffLevel.BALANCED)  # its fallback: a call-back request
    today = datetime.now(UTC).date()
    async with r.store.transaction() as tx:
        assistant = await tx.assistants.by_name(ASSISTANT)
        assert assistant is not None
        await tx.assistants.set_hours(assistant.id, Hours.parse(
            [], [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]))
    placed = await r.place_call()
    await until(lambda: has_line(r, placed.call_id, said("closed")))
    # An agent is on duty, but the office is closed: the caller insists on a person.
    await r.press(placed, "0")
    await until(lambda: has_line(r, placed.call_id, ("caller", "[pressed 0]")))

    async def told_closed_again() -> bool:
        return (await r.transcript(placed.call_id)).count(said("closed")) == 2

    await until(told_closed_again, why="the receptionist did not say it is closed")
    async with r.store.transaction() as tx:
        assert list(await tx.handoffs.for_call(placed.call_id)) == []  # no card, nobody rung
        notes = [n.text for n in await tx.notes.for_call(placed.call_id)]
    assert notes == ["Callback requested: called out of hours."]  # once
    assert await r.call_state_is(placed.call_id, CallState.WITH_AI)
    await r.hang_up(placed)

    async def called_back_later() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(placed.call_id)).outcome is CallOutcome.CALLBACK_REQUESTED

    await until(called_back_later)
