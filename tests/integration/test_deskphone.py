"""An agent on a SIP desk phone: hanging up ends the call, a phone that vanishes does not,
and an agent on a call is not rung for a second one.

The agent's phone is tests.sip_phone: it registers itself, answers the PBX's INVITE and
sends its own BYE, as a desk phone on a real floor does. The caller comes from the
carrier Asterisk, the AI is the tone engine, the controller is the product's.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from handoff.agents import Presence
from handoff.calls import CallOutcome, CallState
from handoff.events import CARDS_TOPIC, QUALITY_TOPIC, Subscription, assistant_topic
from handoff.handoffs import FailureReason, HandoffState
from handoff.live.lines import LineState
from handoff.quality import NO_RTCP
from handoff.store import AgentBusy
from handoff.store.models import Call, Handoff, LegQualityRecord
from handoff.store.quality_repo import figures_of
from pbx import runtime
from tests.integration.asterisk_helpers import assert_quiet
from tests.integration.desk_agent import Bea, bea_at_her_desk, bea_takes_a_call, handoff_is
from tests.sip_phone import AUTO_ANSWER
from tests.waiting import until
from web.bench.audio import FRAME, present, ulaw_decode
from web.bench.rig import (
    DESK_PHONE_SIP_USER,
    Pair,
    PlacedCall,
    Rig,
    asterisk_pair,
    rig,
)
from web.bench.world import local_world

pytestmark = pytest.mark.integration

# The product gives desk phones the PBX's media timeout (30 s: a phone with silence
# suppression may send little while its agent listens). This PBX notices a silent
# phone after a few seconds, so the test of one does not wait half a minute.
SHORT_RTP_TIMEOUT_S = 3


@pytest_asyncio.fixture(scope="module")
async def desk_pair(
    installation: runtime.Installation, state_dir: Path
) -> AsyncIterator[Pair]:
    async with asterisk_pair(installation, state_dir, f"dp{os.getpid()}",
                             rtp_timeout=SHORT_RTP_TIMEOUT_S) as started:
        yield started


@pytest_asyncio.fixture
async def bea(desk_pair: Pair, tmp_path: Path) -> AsyncIterator[Bea]:
    async with (
        local_world(desk_pair.carrier) as world,
        rig(desk_pair.pbx, world, tmp_path / "switchboard.db") as r,
        bea_at_her_desk(r) as seated,
    ):
        yield seated
    await assert_quiet(desk_pair.pbx)
    await assert_quiet(desk_pair.carrier)


async def _ended(r: Rig, call_id: str) -> Call | None:
    async with r.store.transaction() as tx:
        call = await tx.calls.get(call_id)
    return call if call.state is CallState.ENDED else None


def _drain(feed: Subscription) -> list[dict[str, Any]]:
    events = []
    while not feed.queue.empty():
        events.append(feed.queue.get_nowait())
    return events


@pytest.mark.parametrize("reason", ["", "Q.850;cause=16"], ids=["plain_bye", "bye_with_reason"])
async def test_an_agent_who_hangs_up_the_desk_phone_ends_the_call_as_completed_by_the_agent(
    bea: Bea, reason: str,
) -> None:
    r = bea.r
    placed, handoff_id, call = await bea_takes_a_call(bea)
    async with r.control.hub.subscribe(CARDS_TOPIC, assistant_topic("receptionist")) as feed:
        await bea.phone.hang_up(call, reason=reason)  # the handset goes down: BYE
        ended = await until(lambda: _ended(r, placed.call_id))
        events = _drain(feed)
    assert ended.outcome is CallOutcome.COMPLETED_BY_AGENT
    async with r.store.transaction() as tx:
        handoffs = list(await tx.handoffs.for_call(placed.call_id))
    assert [(h.id, h.state) for h in handoffs] == [(handoff_id, HandoffState.COMPLETED)]
    # Nobody is offered the call again, and the AI is not told the agent vanished.
    assert [e["type"] for e in events if e["type"] in ("offered", "handoff_failed")] == []
    assert bea.phone.invites == 1
    assert call.ended_by == "phone"
    # Asterisk wrote the line's figures as the phone's BYE came: they are Bea's.
    legs = await until(lambda: _legs_recorded(r, placed.call_id))
    assert legs["agent"].handoff_id == handoff_id and legs["agent"].packets_received > 0


async def test_a_desk_phone_that_goes_silent_gives_the_caller_back_to_the_ai_and_reoffers(
    bea: Bea,
) -> None:
    r = bea.r
    placed, handoff_id, call = await bea_takes_a_call(bea)
    gone = time.monotonic()
    bea.phone.stop_media(call)  # its power or network went: no BYE, no more RTP
    await r.wait_hears(placed, "ai", after=gone, timeout=SHORT_RTP_TIMEOUT_S + 15)
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.ended_by == "pbx"  # the PBX hung up the silent leg

    async def attempts() -> list[Handoff] | None:
        async with r.store.transaction() as tx:
            found = list(await tx.handoffs.for_call(placed.call_id))
        return found if len(found) >= 2 else None

    first, again = await until(attempts)
    assert (first.id, first.state) == (handoff_id, HandoffState.FAILED)
    assert first.failure_reason is FailureReason.AGENT_VANISHED
    assert (again.state, again.attempt) == (HandoffState.OFFERED, 2)
    assert again.priority > first.priority
    await r.hang_up_caller(placed)
    ended = await until(lambda: _ended(r, placed.call_id))
    assert ended.outcome is CallOutcome.ABANDONED
    # The silent phone's line has its figures too (what it sent before it went
    # silent): Asterisk wrote them as its media timeout ended the leg.
    legs = await until(lambda: _legs_recorded(r, placed.call_id))
    assert legs["agent"].handoff_id == handoff_id


@pytest.mark.parametrize("status", [408, 480, 503])
async def test_a_desk_phone_that_refuses_the_call_fails_the_handoff_and_the_ai_keeps_the_caller(
    bea: Bea, status: int,
) -> None:
    r = bea.r
    bea.phone.answer = status
    placed = await r.place_call()
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="wants a person")
    await r.control.accept(handoff_id, bea.agent_id)

    async def failed() -> Handoff | None:
        async with r.store.transaction() as tx:
            handoff = await tx.handoffs.get(handoff_id)
        return handoff if handoff.state is HandoffState.FAILED else None

    handoff = await until(failed)
    assert handoff.failure_reason in (FailureReason.AGENT_NO_ANSWER,
                                      FailureReason.AGENT_REJECTED,
                                      FailureReason.AGENT_LEG_FAILED)
    assert bea.phone.invites == 1
    await r.wait_hears(placed, "ai", after=time.monotonic())
    await r.hang_up_caller(placed)
    ended = await until(lambda: _ended(r, placed.call_id))
    assert ended.outcome is CallOutcome.ABANDONED  # the call was offered again


async def test_an_agent_on_a_desk_phone_call_is_refused_a_second_card_and_rung_once(
    bea: Bea,
) -> None:
    # Before, the PBX dialled Bea again, her phone answered on its second line, and the
    # second caller heard her talking to the first.
    r = bea.r
    first, _, _ = await bea_takes_a_call(bea)
    async with r.store.transaction() as tx:  # Ada is free, so the next card is offered
        await tx.agents.set_duty(r.agent_id, True)
        await tx.agents.set_presence(r.agent_id, Presence.AVAILABLE)
    second = await r.place_call()
    await r.wait_hears(second, "ai")
    handoff_id = await r.control.request_handoff(second.call_id, reason="caller_asked",
                                                 summary="wants a person")
    with pytest.raises(AgentBusy):
        await r.control.accept(handoff_id, bea.agent_id)
    refused_at = time.monotonic()
    assert await handoff_is(r, handoff_id, HandoffState.OFFERED)  # still for Ada
    # Something that must not happen (a second INVITE to her phone, her voice reaching
    # the new caller): nothing signals its absence, so the test watches for a while.
    await asyncio.sleep(0.5)
    assert bea.phone.invites == 1
    assert await r.world.first_heard(second.caller, "agent", refused_at) is None
    for placed in (first, second):
        await r.hang_up_caller(placed)
        await until(functools.partial(_ended, r, placed.call_id))


async def _round_trip_timed(r: Rig, leg: str) -> bool:
    stats = await r.pbx_ari.channels.rtp_statistics(leg)
    return float(stats.get("maxrtt") or 0) > 0


async def _legs_recorded(r: Rig, call_id: str) -> dict[str, LegQualityRecord] | None:
    async with r.store.transaction() as tx:
        rows = await tx.quality.for_call(call_id)
    return {row.leg: row for row in rows} if len(rows) == 2 else None


async def test_a_handoff_to_a_desk_phone_records_each_legs_jitter_loss_and_round_trip(
    bea: Bea,
) -> None:
    r = bea.r
    placed, handoff_id, _ = await bea_takes_a_call(bea)
    caller_leg = r.control.calls[placed.call_id].caller
    # The carrier's Asterisk sends RTCP on the caller's leg; its first report that
    # answers one of the PBX's comes some 5-10 s into the call.
    await until(lambda: _round_trip_timed(r, caller_leg), 30,
                why="no round trip timed on the caller's leg")
    async with r.control.hub.subscribe(QUALITY_TOPIC) as feed:
        await r.hang_up_caller(placed)
        await until(lambda: _ended(r, placed.call_id))
        # The agent's leg reports as the PBX hangs it up, after the call has ended.
        legs = await until(lambda: _legs_recorded(r, placed.call_id),
                           why="the caller's and the agent's legs were not both recorded")
        # ...and the metrics hear of each line.
        events = [await asyncio.wait_for(feed.get(), 5) for _ in range(2)]
    assert sorted(e["leg"] for e in events) == ["agent", "caller"]
    caller, agent = legs["caller"], legs["agent"]
    assert (caller.handoff_id, agent.handoff_id) == (None, handoff_id)
    for leg in (caller, agent):
        # Real RTP flowed both ways for seconds, every 20 ms.
        assert leg.packets_received > 100
        assert leg.jitter_ms is not None and 0 <= leg.jitter_ms < 1000
        assert leg.jitter_max_ms is not None and leg.jitter_ms <= leg.jitter_max_ms < 1000
        assert leg.loss_pct is not None and 0 <= leg.loss_pct <= 100
    assert caller.rtt_ms is not None and 0 < caller.rtt_ms < 1000
    assert caller.far_loss_pct is not None and 0 <= caller.far_loss_pct <= 100
    # The test desk phone sends no RTCP: nothing to time a round trip with, and the
    # record says so rather than showing 0 ms.
    assert (agent.rtt_ms, agent.far_jitter_ms, agent.far_loss_pct) == (None, None, None)
    assert figures_of(agent).why_absent == NO_RTCP
    async with r.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    assert handoff.offered_at and handoff.accepted_at and handoff.media_at
    assert handoff.offered_at <= handoff.accepted_at <= handoff.media_at
    assert handoff.connected_at and handoff.media_at <= handoff.connected_at


def frames_with_both(r: Rig, placed: PlacedCall, start: float, end: float) -> int:
    """How many of the 20 ms frames the caller heard between two instants carried the
    AI's voice and the agent's together."""
    return sum(1 for packet in r.world.probes[placed.caller].received
               if start <= packet.at <= end
               and {"ai", "agent"} <= present(ulaw_decode(packet.payload)[:FRAME]))


async def _line_is(r: Rig, agent_id: int, state: LineState) -> bool:
    line = r.control.lines.of(agent_id)
    return line is not None and line.state is state


async def test_an_auto_answering_desk_phone_keeps_an_open_line_and_accept_is_a_bridge_move(
    bea: Bea, caplog: pytest.LogCaptureFixture,
) -> None:
    r = bea.r
    bea.phone.auto_answer = True
    bea.phone.answer = "ring"  # only an INVITE asking it to answer by itself is answered
    # On duty with the open-line option: the PBX calls the phone once, asking it (in the
    # INVITE's Call-Info) to answer by itself; it does, and the leg parks.
    await r.control.open_line(bea.agent_id, DESK_PHONE_SIP_USER, desk_phone=True)
    line_call = await bea.phone.wait_call()
    assert AUTO_ANSWER.search(line_call.call_info)
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    # Accept moves the parked leg into the call: no new INVITE at the phone.
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="wants a person")
    live = r.control.live(placed.call_id)
    ai_leg = live.ai
    accepted = time.monotonic()
    await r.control.accept(handoff_id, bea.agent_id)
    heard = await r.wait_hears(placed, "agent", after=accepted)
    # The line was sending already: the AI leaves the call's bridge a mixing tick after
    # it joined, so the caller hears no hole between them, and the two of them together
    # in one frame at most: then Bea alone, not the AI over her.
    await until(lambda: live.ai is None)
    members = (await r.pbx_ari.bridges.get(live.bridge))["channels"]
    assert ai_leg not in members and live.agent in members
    await until(lambda: r.world.first_heard(placed.caller, "agent", heard + 0.3))
    if not [rec for rec in caplog.records if "the AI left the call's bridge" in rec.getMessage()]:
        # Unless the controller says it sent the AI away late (a box too busy for it):
        # one frame at most.
        assert frames_with_both(r, placed, accepted, heard + 0.3) <= 1
    assert await r.world.first_heard(placed.caller, "ai", heard + 0.1) is None
    await bea.phone.wait_hears(line_call, "caller")
    # The ledger follows: the handoff connected, the call with Bea, both legs named.
    await until(lambda: handoff_is(r, handoff_id, HandoffState.CONNECTED))
    async with r.store.transaction() as tx:
        call = await tx.calls.get(placed.call_id)
    assert (call.state, call.agent_channel_id, call.ai_channel_id) == (
        CallState.WITH_AGENT, live.agent, None)
    assert bea.phone.invites == 1
    # The caller hangs up: the line goes back to its holding bridge, still up.
    await r.hang_up_caller(placed)
    await until(lambda: _ended(r, placed.call_id))
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    assert not line_call.ended.is_set() and bea.phone.invites == 1
    # The next caller: Bea puts the handset down to end the call, as on the ringing
    # path. The call is hers, completed (not offered again), and her line comes back.
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="wants a person")
    await r.control.accept(handoff_id, bea.agent_id)
    await r.wait_hears(placed, "agent", after=time.monotonic())
    await until(lambda: handoff_is(r, handoff_id, HandoffState.CONNECTED))
    await bea.phone.hang_up(line_call)
    ended = await until(lambda: _ended(r, placed.call_id))
    assert ended.outcome is CallOutcome.COMPLETED_BY_AGENT
    assert await handoff_is(r, handoff_id, HandoffState.COMPLETED)
    line_call = await bea.phone.wait_call()  # called again; it answers by itself
    assert AUTO_ANSWER.search(line_call.call_info) and bea.phone.invites == 2
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    # Off duty hangs it up.
    await r.control.close_line(bea.agent_id, DESK_PHONE_SIP_USER)
    await asyncio.wait_for(line_call.ended.wait(), 5)
    assert line_call.ended_by == "pbx" and r.control.lines.of(bea.agent_id) is None


def _voiced_since(dialog: Any, since: float) -> int:
    """Frames with sound in them (any party's) the phone received since `since`."""
    return sum(1 for item in dialog.media.received if item.at >= since and item.voiced)


async def test_a_line_staged_for_a_card_neither_hears_nor_is_heard_until_accept(
    bea: Bea, monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = bea.r
    bea.phone.auto_answer = True
    bea.phone.answer = "ring"
    await r.control.open_line(bea.agent_id, DESK_PHONE_SIP_USER, desk_phone=True)
    line_call = await bea.phone.wait_call()
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    # A card for Bea: her line waits in the call's bridge, muted both ways.
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                    summary="wants a person")
    live = r.control.live(placed.call_id)
    line = r.control.lines.of(bea.agent_id)
    assert line is not None and line.state is LineState.STAGED
    assert line.leg in (await r.pbx_ari.bridges.get(live.bridge))["channels"]
    offered = time.monotonic()
    await asyncio.sleep(1.5)
    # 1.5 s on offer: the caller hears the AI, not Bea, not even under the AI; Bea's
    # phone gets no sound at all (the caller's, the AI's).
    assert await r.world.first_heard(placed.caller, "ai", offered) is not None
    assert await r.world.first_heard_in_mix(placed.caller, "agent", offered) is None
    assert _voiced_since(line_call, offered) == 0
    # The caller leaves before anyone takes the card: the line goes back, still up.
    await r.hang_up_caller(placed)
    await until(lambda: _ended(r, placed.call_id))
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    assert line.leg in (await r.pbx_ari.bridges.get(line.bridge))["channels"]
    # Parked, it serves as before: with staging turned off, the next card's Accept
    # moves it in from its holding bridge, and each side hears the other.
    monkeypatch.setattr(r.control.timing, "staged_agents", 0)
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="wants a person")
    assert await _line_is(r, bea.agent_id, LineState.IDLE)  # not staged
    accepted = time.monotonic()
    await r.control.accept(handoff_id, bea.agent_id)
    await r.wait_hears(placed, "agent", after=accepted)
    await bea.phone.wait_hears(line_call, "caller", after=accepted)
    await until(lambda: handoff_is(r, handoff_id, HandoffState.CONNECTED))
    await r.hang_up_caller(placed)
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    # Staged again, and accepted: unmuted where it waited, each side hears the other.
    monkeypatch.setattr(r.control.timing, "staged_agents", 4)
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="wants a person")
    assert await _line_is(r, bea.agent_id, LineState.STAGED)
    accepted = time.monotonic()
    await r.control.accept(handoff_id, bea.agent_id)
    await r.wait_hears(placed, "agent", after=accepted)
    await bea.phone.wait_hears(line_call, "caller", after=accepted)
    await until(lambda: handoff_is(r, handoff_id, HandoffState.CONNECTED))
    assert bea.phone.invites == 1  # one line the whole time
    await r.hang_up_caller(placed)
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    await r.control.close_line(bea.agent_id, DESK_PHONE_SIP_USER)
    await asyncio.wait_for(line_call.ended.wait(), 5)


async def test_a_desk_phone_line_answered_without_audio_is_not_used_and_is_called_again(
    bea: Bea,
) -> None:
    r = bea.r
    bea.phone.auto_answer = True
    bea.phone.answer = "ring"
    bea.phone.sends_media = False  # its network passes SIP and drops the RTP
    await r.control.open_line(bea.agent_id, DESK_PHONE_SIP_USER, desk_phone=True)
    deaf = await bea.phone.wait_call()
    await until(lambda: _line_answered(r, bea.agent_id))
    # Up as far as SIP goes, but no audio has reached the PBX: not ready, so an Accept
    # would ring her phone rather than move a caller into silence, and to the phone
    # watch her desk cannot take a call.
    line = r.control.lines.of(bea.agent_id)
    assert line is not None and line.state is LineState.ANSWERED
    assert not r.control.lines.idle(bea.agent_id)
    assert await r.control.phone_registered(DESK_PHONE_SIP_USER) is False
    bea.phone.sends_media = True  # the network back (for the calls it answers next)
    # Hung up for its silence (by the PBX's media timeout or the controller's bound,
    # whichever comes first), and called again by itself; heard this time.
    await asyncio.wait_for(deaf.ended.wait(), 15)
    again = await bea.phone.wait_call(timeout=15)
    assert AUTO_ANSWER.search(again.call_info) and bea.phone.invites == 2
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    assert await r.control.phone_registered(DESK_PHONE_SIP_USER) is True
    await r.control.close_line(bea.agent_id, DESK_PHONE_SIP_USER)
    await asyncio.wait_for(again.ended.wait(), 5)


async def _line_answered(r: Rig, agent_id: int) -> bool:
    """The line is past ringing (answered; idle too, where audio is not waited for)."""
    line = r.control.lines.of(agent_id)
    return line is not None and line.state is not LineState.RINGING


async def test_a_desk_phone_that_hangs_up_its_idle_open_line_is_down_until_off_duty(
    bea: Bea,
) -> None:
    r = bea.r
    bea.phone.auto_answer = True
    await r.control.open_line(bea.agent_id, DESK_PHONE_SIP_USER, desk_phone=True)
    line_call = await bea.phone.wait_call()
    await until(lambda: _line_is(r, bea.agent_id, LineState.IDLE))
    await bea.phone.hang_up(line_call)  # the agent's own BYE
    await until(lambda: r.control.lines.of(bea.agent_id) is None)
    # Down: to the phone watch a phone that cannot ring (away after its grace).
    assert await r.control.phone_registered(DESK_PHONE_SIP_USER) is False
    await r.control.close_line(bea.agent_id, DESK_PHONE_SIP_USER)
    assert await r.control.phone_registered(DESK_PHONE_SIP_USER) is True


async def test_a_desk_phone_without_the_open_line_still_rings_and_is_asked_no_auto_answer(
    bea: Bea,
) -> None:
    bea.phone.auto_answer = True  # it would answer by itself if asked
    placed, _, call = await bea_takes_a_call(bea)
    assert call.call_info == "" and bea.phone.invites == 1
    await bea.phone.hang_up(call)
    await until(lambda: _ended(bea.r, placed.call_id))
