"""The open line step by step on the fake ARI (handoff.live.lines): parked, moved into a
call by Accept, parked again, lost mid-call, turned off. tests/e2e/test_open_line.py runs
the same with Chromium on a real Asterisk."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

import pytest
from sqlalchemy import event as sql_event

from handoff.handoffs import FailureReason, HandoffState
from handoff.live import LineBackoff, LineRefused, LiveCall, Party
from handoff.live.lines import Line, LineState
from tests.unit.test_live_calls import Floor, floor  # noqa: F401 (the fixture below uses it)
from tests.unit.test_quality import DESK_PHONE
from tests.waiting import until


@pytest.fixture
def desks(floor: Floor) -> Floor:  # noqa: F811 (the imported fixture)
    """test_live_calls' floor: the fake PBX, the controller, Ada and Bob at their phones."""
    return floor


async def open_line(desks: Floor) -> str:
    """Ada's line: the PBX calls her phone, which answers; returns its leg."""
    await desks.live.control.open_line(desks.ada, "ada-desk")
    line = await until(lambda: _idle(desks))
    assert desks.ari.bridged[line.bridge] == {line.leg}
    return line.leg


async def test_accept_moves_the_line_into_the_call_and_the_end_parks_it(desks: Floor) -> None:
    leg = await open_line(desks)
    dialled = list(desks.ari.dialled)
    caller, live, handoff_id = await desks.handed_to_ada()
    # One bridge move: Ada's line is in the call bridge, and nothing else was dialled.
    assert live.agent == leg
    assert leg in desks.ari.bridged[live.bridge]
    assert desks.ari.dialled == dialled
    assert await desks.handoff_state(handoff_id) is HandoffState.CONNECTED

    await desks.ari.hang_up_phone(caller)
    line = await until(lambda: _idle(desks))
    assert line.leg == leg and desks.ari.bridged[line.bridge] == {leg}
    # Off duty hangs it up; nothing is left on the PBX (the fixture checks).
    await desks.live.control.close_line(desks.ada, "ada-desk")
    assert desks.live.control.lines.of(desks.ada) is None


async def test_return_to_ai_parks_the_line(desks: Floor) -> None:
    leg = await open_line(desks)
    caller, live, _ = await desks.handed_to_ada()
    await desks.live.control.return_to_ai(live.call_id)
    assert live.party is Party.AI and live.ai is not None
    assert (await until(lambda: _idle(desks))).leg == leg
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")


async def test_a_line_lost_mid_call_gives_the_caller_to_the_ai_and_reads_as_a_dead_phone(
    desks: Floor,
) -> None:
    leg = await open_line(desks)
    caller, live, handoff_id = await desks.handed_to_ada()
    await desks.ari.lose_phone(leg)
    assert await until(lambda: _failed(desks, handoff_id)) is FailureReason.AGENT_VANISHED
    await until(lambda: live.ai is not None and live.party is Party.AI)
    # Until her tab asks again, her phone cannot take a call: the phone watch's answer.
    assert await desks.live.control.phone_registered("ada-desk") is False
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")
    assert not desks.live.control.lines.down("ada-desk")  # off duty: no line wanted


async def test_a_line_lost_as_it_moves_in_gives_the_caller_back_to_the_ai(
    desks: Floor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The AI leaves as soon as the line is in the call's bridge; the ledger's connect
    # follows. A line lost in between must still bring the AI back and re-offer the call.
    leg = await open_line(desks)
    moves = desks.live.control.moves
    gate, done = asyncio.Event(), asyncio.Event()
    line_connected, settled, agent_gone = moves._line_connected, moves.settled, moves.agent_gone

    async def held_ledger(live: LiveCall, media_at: datetime) -> None:
        await gate.wait()  # the ledger's connect waits until the loss is being handled
        await line_connected(live, media_at)

    async def waiting_for_the_move(live: LiveCall) -> None:
        gate.set()
        await settled(live)

    async def handled(live: LiveCall, cause: int) -> None:
        try:
            await agent_gone(live, cause)
        finally:
            gate.set()
            done.set()

    monkeypatch.setattr(moves, "_line_connected", held_ledger)
    monkeypatch.setattr(moves, "settled", waiting_for_the_move)
    monkeypatch.setattr(moves, "agent_gone", handled)
    caller, live = await desks.call()
    handoff_id = await desks.live.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")
    await desks.live.control.accept(handoff_id, desks.ada)
    await until(lambda: live.ai is None)  # out a tick later; the ledger has not said so yet
    await desks.ari.lose_phone(leg)
    await asyncio.wait_for(done.wait(), 5)
    assert await until(lambda: _failed(desks, handoff_id)) is FailureReason.AGENT_VANISHED
    await until(lambda: live.ai is not None and live.party is Party.AI)
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")


async def test_a_line_lost_in_the_tick_before_the_ai_leaves_keeps_the_caller_with_the_ai(
    desks: Floor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The AI leaves a mixing tick after the line joined the call's bridge (a long one
    # here, so that the loss lands inside it): a line lost by then never had the caller.
    monkeypatch.setattr(desks.live.control.timing, "line_overlap_s", 0.5)
    leg = await open_line(desks)
    caller, live = await desks.call()
    ai = live.ai
    handoff_id = await desks.live.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")
    await desks.live.control.accept(handoff_id, desks.ada)
    assert (live.ai, live.party) == (ai, Party.AGENT_ANSWERED)
    await desks.ari.lose_phone(leg)
    assert await until(lambda: _failed(desks, handoff_id)) is FailureReason.AGENT_VANISHED
    await until(live.move_settled.is_set)
    # The AI never left: the same leg has the caller, and the call is offered again.
    assert (live.ai, live.party) == (ai, Party.AI)
    assert await until(lambda: live.handoff_id not in (None, handoff_id))
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")


async def test_off_duty_during_a_call_hangs_the_line_up_when_the_call_ends(
    desks: Floor,
) -> None:
    leg = await open_line(desks)
    caller, _, _ = await desks.handed_to_ada()
    await desks.live.control.close_line(desks.ada, "ada-desk")
    assert leg in desks.ari.chans  # the caller is not dropped
    await desks.ari.hang_up_phone(caller)
    await until(lambda: leg not in desks.ari.chans)
    assert desks.live.control.lines.of(desks.ada) is None


async def test_with_open_lines_off_no_line_is_opened(desks: Floor) -> None:
    desks.live.control.lines.enabled = False
    with pytest.raises(LineRefused):
        await desks.live.control.open_line(desks.ada, "ada-desk")
    assert desks.ari.dialled == []


async def _failed(desks: Floor, handoff_id: int) -> FailureReason | None:
    async with desks.store.transaction() as tx:
        return (await tx.handoffs.get(handoff_id)).failure_reason


def _idle(desks: Floor) -> Line | None:
    line = desks.live.control.lines.of(desks.ada)
    return line if line is not None and line.state is LineState.IDLE else None


async def test_a_card_for_agents_on_open_lines_reads_each_table_once(desks: Floor) -> None:
    # Every handoff asks this of the store while the caller waits with the AI: who is
    # free (one statement, however many agents) and the assistant's hours, queue and
    # timeout (one read). Agents on open lines need no staged leg, so nobody is read
    # again one by one.
    await desks.live.control.open_line(desks.ada, "ada-desk")
    await desks.live.control.open_line(desks.bob, "bob-desk")
    lines = desks.live.control.lines
    await until(lambda: lines.idle(desks.ada) and lines.idle(desks.bob))
    caller, live = await desks.call()
    await desks.ari.idle()
    reads: list[str] = []

    def count(*args: object) -> None:
        if (read := re.match(r"SELECT\s.*?\sFROM\s+(\w+)", str(args[2]), re.S)) is not None:
            reads.append(read[1])

    engine = desks.store.engine.sync_engine
    sql_event.listen(engine, "before_cursor_execute", count)
    try:
        await desks.live.control.request_handoff(live.call_id, reason="caller_asked",
                                                 summary="wants a person")
    finally:
        sql_event.remove(engine, "before_cursor_execute", count)
    assert live.staged == {}
    assert (reads.count("agents"), reads.count("assistants")) == (1, 1), reads
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")
    await desks.live.control.close_line(desks.bob, "bob-desk")


async def test_a_card_handed_back_before_its_offer_timeout_asks_the_store_nothing_then(
    desks: Floor,
) -> None:
    async with desks.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_handoff_rules(
            receptionist.id, handoff_level=receptionist.handoff_level, accept_timeout_s=1,
            fallback_kind=receptionist.fallback_kind, fallback_number=None)
    await open_line(desks)
    caller, live, handoff_id = await desks.handed_to_ada()
    await desks.live.control.return_to_ai(live.call_id)
    await desks.ari.idle()
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = desks.store.engine.sync_engine
    sql_event.listen(engine, "before_cursor_execute", count)
    try:
        # The offer's timeout comes and goes: the card was over long before.
        await until(lambda: not any(t.get_name() == f"offer timeout {handoff_id}"
                                    for t in asyncio.all_tasks()))
    finally:
        sql_event.remove(engine, "before_cursor_execute", count)
    assert not [s for s in statements if "handoffs.id = " in s], statements
    assert await desks.handoff_state(handoff_id) is HandoffState.RETURNED_TO_AI
    await desks.ari.hang_up_phone(caller)
    await desks.live.control.close_line(desks.ada, "ada-desk")


async def test_a_line_ending_files_no_quality_under_its_last_handoff(desks: Floor) -> None:
    leg = await open_line(desks)
    caller, live, _ = await desks.handed_to_ada()
    await desks.ari.hang_up_phone(caller)
    await until(lambda: _idle(desks))
    # Off duty: Asterisk writes the line's figures as it ends, those of a whole shift.
    channel = desks.ari.chans[leg].to_json()
    for variable, value in DESK_PHONE.items():
        await desks.ari._emit({"type": "ChannelVarset", "channel": channel,
                               "variable": variable, "value": value})
    await desks.live.control.close_line(desks.ada, "ada-desk")
    await desks.ari.idle()
    async with desks.store.transaction() as tx:
        assert [q.leg for q in await tx.quality.for_call(live.call_id)] == []


async def test_a_reconnected_event_stream_leaves_the_lines_alone(desks: Floor) -> None:
    leg = await open_line(desks)
    # Reconciliation hangs up what belongs to no call; a parked line is nobody's call.
    await desks.live.control.reconcile()
    line = _idle(desks)
    assert line is not None and line.leg == leg and leg in desks.ari.chans
    await desks.live.control.close_line(desks.ada, "ada-desk")


class Outage:
    """The controller's clock and pauses for a line's reopening, under the test's hand:
    each pause is recorded and moves the clock on at once (no real waiting)."""

    def __init__(self, desks: Floor, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        self.pauses: list[float] = []
        lines = desks.live.control.lines
        monkeypatch.setattr(lines.reopening, "clock", lambda: self.now)
        monkeypatch.setattr(lines, "sleep", self.sleep)
        # The test ends each deaf line itself (as the PBX's RTP timeout does) unless
        # it says otherwise: the controller's own bound does not race it.
        monkeypatch.setattr(desks.live.control.timing, "line_media_wait_s", 30.0)

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def answered(desks: Floor, not_leg: str = "") -> Line:
    """Ada's newest line, answered (as far as SIP goes)."""
    def new() -> Line | None:
        line = desks.live.control.lines.of(desks.ada)
        return line if line is not None and line.leg != not_leg \
            and line.state is not LineState.RINGING else None
    return await until(new)


async def test_a_desk_phones_line_answered_deaf_is_not_used_and_is_called_again_less_often(
    desks: Floor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outage = Outage(desks, monkeypatch)
    lines = desks.live.control.lines
    desks.ari.phones["PJSIP/ada-desk"] = "deaf"  # SIP gets through, RTP does not
    await desks.live.control.open_line(desks.ada, "ada-desk", desk_phone=True)
    line = await answered(desks)
    # Answered is not ready: no Accept moves a caller onto it (it would ring her phone
    # instead), and to the phone watch her desk cannot take a call.
    assert line.state is LineState.ANSWERED and not lines.idle(desks.ada)
    assert lines.take(desks.ada) is None
    assert lines.down("ada-desk")
    # The outage lasts: each deaf line ends at the PBX's RTP timeout, and the next is
    # called after a pause that doubles, up to a minute.
    for _ in range(8):
        await desks.ari.lose_phone(line.leg)
        line = await answered(desks, not_leg=line.leg)
    assert outage.pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    # The network back: the next line is heard, and ready for Accept.
    desks.ari.phones["PJSIP/ada-desk"] = "answer"
    await desks.ari.lose_phone(line.leg)
    line = await until(lambda: _idle(desks))
    assert not lines.down("ada-desk")
    # A line heard starts the count again: the next deaf one (ended by the controller's
    # own bound this time, hanging it up) is followed by the first pause.
    await desks.live.control.close_line(desks.ada, "ada-desk")
    monkeypatch.setattr(desks.live.control.timing, "line_media_wait_s", 0.05)
    desks.ari.phones["PJSIP/ada-desk"] = "deaf"
    await desks.live.control.open_line(desks.ada, "ada-desk", desk_phone=True)
    deaf = (await answered(desks)).leg
    await until(lambda: deaf in desks.ari.hangup_reasons)
    await until(lambda: len(outage.pauses) == 10)
    assert outage.pauses[-2:] == [60.0, 1.0]
    monkeypatch.setattr(desks.live.control.timing, "line_media_wait_s", 30.0)
    await desks.live.control.close_line(desks.ada, "ada-desk")
    await desks.ari.idle()
    assert desks.live.control.lines.of(desks.ada) is None


async def test_a_tab_asking_again_after_a_deaf_line_is_told_when_to(
    desks: Floor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outage = Outage(desks, monkeypatch)
    desks.ari.phones["PJSIP/ada-desk"] = "deaf"
    await desks.live.control.open_line(desks.ada, "ada-desk")
    await desks.ari.lose_phone((await answered(desks)).leg)
    await until(lambda: desks.live.control.lines.of(desks.ada) is None)
    # The tab asks at once: refused with the time to wait (no call to its phone).
    dialled = list(desks.ari.dialled)
    with pytest.raises(LineBackoff) as refused:
        await desks.live.control.open_line(desks.ada, "ada-desk")
    assert refused.value.retry_after_s == 1.0 and desks.ari.dialled == dialled
    assert outage.pauses == []  # a tab's line is the tab's to ask for again
    outage.now += 1.0
    desks.ari.phones["PJSIP/ada-desk"] = "answer"
    await desks.live.control.open_line(desks.ada, "ada-desk")
    await until(lambda: _idle(desks))
    await desks.live.control.close_line(desks.ada, "ada-desk")


async def test_an_accept_as_the_lines_first_audio_is_on_its_way_takes_the_line(
    desks: Floor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tab shows its line open once ICE and DTLS are done; the PBX hears its first
    # packet a moment later. An Accept in that moment waits for it, not a ring.
    Outage(desks, monkeypatch)
    desks.ari.phones["PJSIP/ada-desk"] = "deaf"  # its first packet not there yet
    await desks.live.control.open_line(desks.ada, "ada-desk")
    line = await answered(desks)
    caller, live = await desks.call()
    handoff_id = await desks.live.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")
    accepting = asyncio.create_task(desks.live.control.accept(handoff_id, desks.ada))
    await asyncio.sleep(0.05)  # a window: the Accept must still be waiting in it
    assert not accepting.done() and live.agent is None
    desks.ari.chans[line.leg].deaf = False  # its audio arrives
    await accepting
    assert live.agent == line.leg and line.leg in desks.ari.bridged[live.bridge]
    await desks.ari.hang_up_phone(caller)
    await until(lambda: _idle(desks))
    await desks.live.control.close_line(desks.ada, "ada-desk")


def _line(desks: Floor, agent_id: int) -> Line:
    line = desks.live.control.lines.of(agent_id)
    assert line is not None
    return line


async def _both_lines(desks: Floor) -> tuple[str, str]:
    await desks.live.control.open_line(desks.ada, "ada-desk")
    await desks.live.control.open_line(desks.bob, "bob-desk")
    lines = desks.live.control.lines
    await until(lambda: lines.idle(desks.ada) and lines.idle(desks.bob))
    return _line(desks, desks.ada).leg, _line(desks, desks.bob).leg


async def _handoff_is(desks: Floor, handoff_id: int, state: HandoffState) -> bool:
    return await desks.handoff_state(handoff_id) is state


def _parked(desks: Floor, agent_id: int) -> bool:
    """The agent's line is back in its holding bridge, heard and hearing again."""
    line = _line(desks, agent_id)
    return (line.state is LineState.IDLE and desks.ari.bridged[line.bridge] == {line.leg}
            and not desks.ari.chans[line.leg].muted and not line.muted)


async def test_an_offered_card_stages_the_line_muted_and_accept_only_unmutes_it(
    desks: Floor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada_leg, bob_leg = await _both_lines(desks)
    caller, live = await desks.call()
    handoff_id = await desks.live.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")
    # On offer: both lines wait in the call's bridge, muted both ways, still free.
    for agent_id, leg in ((desks.ada, ada_leg), (desks.bob, bob_leg)):
        assert _line(desks, agent_id).state is LineState.STAGED
        assert leg in desks.ari.bridged[live.bridge] and desks.ari.chans[leg].muted
        assert desks.live.control.lines.idle(agent_id)
    moves: list[tuple[str, object]] = []
    add_channel = desks.ari.bridges.add_channel

    async def counted(bridge_id: str, channel: object) -> None:
        moves.append((bridge_id, channel))
        await add_channel(bridge_id, channel)  # type: ignore[arg-type]

    monkeypatch.setattr(desks.ari.bridges, "add_channel", counted)
    await desks.live.control.accept(handoff_id, desks.ada)
    # Ada's line was there already: Accept unmuted it and moved nothing into the call.
    assert not [m for m in moves if m[0] == live.bridge]
    assert live.agent == ada_leg and not desks.ari.chans[ada_leg].muted
    assert ada_leg in desks.ari.bridged[live.bridge]
    await until(lambda: _handoff_is(desks, handoff_id, HandoffState.CONNECTED))
    # Bob's card is gone: his line is parked again, and unmuted there.
    assert _parked(desks, desks.bob)
    assert bob_leg not in desks.ari.bridged[live.bridge]
    await desks.ari.hang_up_phone(caller)
    await until(lambda: _parked(desks, desks.ada))
    await desks.live.control.close_line(desks.ada, "ada-desk")
    await desks.live.control.close_line(desks.bob, "bob-desk")


async def test_a_line_staged_for_one_card_is_taken_for_another(desks: Floor) -> None:
    ada_leg, _ = await _both_lines(desks)
    first_caller, first = await desks.call()
    await desks.live.control.request_handoff(first.call_id, reason="caller_asked",
                                             summary="wants a person")
    assert _line(desks, desks.ada).staged_in == first.bridge
    # A second card while her line waits in the first call: it is not staged twice, and
    # Accept on the second brings it over, unmuted.
    second_caller, second = await desks.call()
    handoff_id = await desks.live.control.request_handoff(
        second.call_id, reason="caller_asked", summary="wants a person")
    assert ada_leg not in desks.ari.bridged[second.bridge]
    await desks.live.control.accept(handoff_id, desks.ada)
    assert second.agent == ada_leg and ada_leg in desks.ari.bridged[second.bridge]
    assert ada_leg not in desks.ari.bridged[first.bridge]
    assert not desks.ari.chans[ada_leg].muted
    line = _line(desks, desks.ada)
    assert line.state is LineState.ON_CALL and line.staged_in is None
    # The first card, withdrawn when its caller leaves, has nothing of hers to park.
    await desks.ari.hang_up_phone(first_caller)
    await until(lambda: desks.outcome(first.call_id))
    assert _line(desks, desks.ada).state is LineState.ON_CALL
    assert ada_leg in desks.ari.bridged[second.bridge]
    await desks.ari.hang_up_phone(second_caller)
    await until(lambda: _parked(desks, desks.ada))
    await desks.live.control.close_line(desks.ada, "ada-desk")
    await desks.live.control.close_line(desks.bob, "bob-desk")


async def test_a_staged_line_is_parked_when_the_caller_leaves_and_hung_up_off_duty(
    desks: Floor,
) -> None:
    ada_leg, bob_leg = await _both_lines(desks)
    caller, live = await desks.call()
    handoff_id = await desks.live.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")
    # Bob goes off duty while his line waits in the call: it is hung up, the card stays.
    await desks.live.control.close_line(desks.bob, "bob-desk")
    assert desks.live.control.lines.of(desks.bob) is None and bob_leg not in desks.ari.chans
    assert await desks.handoff_state(handoff_id) is HandoffState.OFFERED
    # The caller leaves before anyone accepts: Ada's line goes back, unmuted, still up.
    await desks.ari.hang_up_phone(caller)
    await until(lambda: desks.outcome(live.call_id))
    await until(lambda: _parked(desks, desks.ada))
    assert _line(desks, desks.ada).leg == ada_leg
    await desks.live.control.close_line(desks.ada, "ada-desk")
