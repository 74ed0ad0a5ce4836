"""The call flow step by step, on a fake ARI: the controller the product builds
(handoff.controller.build_controller), a real store, and Asterisk's events as it sends
them. The same flows run on a real Asterisk in tests/integration; these pin each step
and each fault quickly."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from handoff.agents import EndpointKind, Presence
from handoff.assistants import EngineKind, FallbackKind, HandoffLevel
from handoff.calls import CallOutcome, CallState
from handoff.controller import LiveServices, build_controller
from handoff.events import EventHub, assistant_topic
from handoff.handoffs import FailureReason, HandoffState
from handoff.live import CallStateConflict, LiveCall, Party, Timing, call_key
from handoff.live.call import ENDING, PARTY, Ending, EndingEvent, PartyEvent
from handoff.live.offer import CALLBACK_NOTE
from handoff.policy import HandoffPolicy
from handoff.states import InvalidTransition
from handoff.store import AlreadyTaken, Store, create_store_engine, upgrade_to_head
from handoff.store.models import Call
from handoff.topics import Topic
from pbx.ari import Event
from tests.unit.fake_ari import FakeAri
from tests.waiting import until

QUICK = Timing(ai_overlap_s=0.0, agent_media_wait_s=0.2, agent_media_poll_s=0.001,
               ring_timeout_s=5)


@dataclass(frozen=True)
class Engine:
    address: str = "127.0.0.1:9"

    def expect_call(self, call_id: str) -> None:
        return None


@dataclass
class Floor:
    """The fake PBX, the controller on it, and two agents at their desk phones."""

    ari: FakeAri
    live: LiveServices
    store: Store
    hub: EventHub
    ada: int
    bob: int

    async def call(self) -> tuple[str, LiveCall]:
        """A caller reaches the receptionist and hears the AI: (channel, live call)."""
        caller = await self.ari.caller_dials()
        await until(lambda: _has_ai(self, caller))
        live = next(c for c in self.live.control.calls.values() if c.caller == caller)
        return caller, live

    async def state(self, call_id: str) -> CallState:
        async with self.store.transaction() as tx:
            return (await tx.calls.get(call_id)).state

    async def handoff_state(self, handoff_id: int) -> HandoffState:
        async with self.store.transaction() as tx:
            return (await tx.handoffs.get(handoff_id)).state

    async def outcome(self, call_id: str) -> CallOutcome | None:
        async with self.store.transaction() as tx:
            return (await tx.calls.get(call_id)).outcome

    async def handed_to_ada(self) -> tuple[str, LiveCall, int]:
        caller, live = await self.call()
        handoff_id = await self.live.control.request_handoff(
            live.call_id, reason="caller_asked", summary="wants a person")
        await self.live.control.accept(handoff_id, self.ada)
        await until(lambda: _is(live.party, Party.AGENT))
        # The party changes as the AI starts to leave; the ledger says so a moment later.
        await until(lambda: self._with_agent(live.call_id))
        return caller, live, handoff_id

    async def _with_agent(self, call_id: str) -> bool:
        return await self.state(call_id) is CallState.WITH_AGENT


async def _has_ai(floor: Floor, caller: str) -> bool:
    return any(c.caller == caller and c.ai for c in floor.live.control.calls.values())


async def _is(value: object, expected: object) -> bool:
    return value == expected


@pytest.fixture
async def floor(tmp_path: Path) -> AsyncIterator[Floor]:
    engine = create_store_engine(f"sqlite:///{tmp_path}/calls.db")
    await upgrade_to_head(engine)
    store, hub, ari = Store(engine), EventHub(), FakeAri()
    async with store.transaction() as tx:
        await tx.assistants.create(name="receptionist", numbers=["2000"],
                                   engine=EngineKind.AUDIOSOCKET, engine_address=Engine().address,
                                   control_token_hash=hashlib.sha256(b"t").hexdigest())
        ids = []
        for login in ("ada", "bob"):
            agent = await tx.agents.create(login=login, display_name=login.title(),
                                           sip_user=f"{login}-desk", sip_password="x",
                                           endpoint_kind=EndpointKind.DESKPHONE)
            await tx.agents.set_duty(agent.id, True)
            await tx.agents.set_presence(agent.id, Presence.AVAILABLE)
            ids.append(agent.id)
    live = build_controller(ari, store, hub, timing=QUICK)
    try:
        yield Floor(ari, live, store, hub, *ids)
        await ari.idle()
        # Every call the test made ended with an outcome, and left nothing on the PBX.
        async with store.transaction() as tx:
            assert not list(await tx.calls.open_calls())
        assert not ari.chans and not ari.bridged, (ari.chans, ari.bridged)
    finally:
        await live.close()
        await ari.close()
        await engine.dispose()


async def test_a_caller_is_answered_into_a_recorded_bridge_with_the_ai(floor: Floor) -> None:
    caller, live = await floor.call()
    assert floor.ari.bridged[live.bridge] == {caller, live.ai}
    assert live.bridge in floor.ari.recording
    assert await floor.state(live.call_id) is CallState.WITH_AI
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AI))


async def _outcome_is(floor: Floor, call_id: str, outcome: CallOutcome) -> bool:
    return await floor.outcome(call_id) is outcome


async def test_keys_pressed_before_the_ai_is_in_the_bridge_are_given_to_it(floor: Floor) -> None:
    """The bridge passes a key only to the legs in it: a caller who presses 0 while the
    AI's leg is on its way in would reach nobody, so the key is kept and sent to the
    leg once it is in; a key pressed after that is the bridge's to pass, not sent twice."""
    caller = await floor.ari.caller_dials()
    # Queued behind the caller's arrival, ahead of the AI leg's entering the bridge.
    await floor.ari.press(caller, "0")
    await floor.ari.press(caller, "1")
    await until(lambda: _has_ai(floor, caller))
    await floor.ari.idle()
    live = next(c for c in floor.live.control.calls.values() if c.caller == caller)
    assert floor.ari.dtmf_sent == [(live.ai, "01")]
    assert live.ai_joining is None and live.keys_for_ai == []
    await floor.ari.press(caller, "2")
    await floor.ari.idle()
    assert floor.ari.dtmf_sent == [(live.ai, "01")]
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AI))


async def test_an_accepted_card_rings_the_winner_and_the_ai_leaves_once_they_answer(
    floor: Floor,
) -> None:
    caller, live, handoff_id = await floor.handed_to_ada()
    [ada_leg] = floor.ari.legs("PJSIP/ada-desk")
    assert live.agent == ada_leg and live.ai is None
    assert floor.ari.bridged[live.bridge] == {caller, ada_leg}  # the AI's leg has gone
    assert await floor.state(live.call_id) is CallState.WITH_AGENT
    assert await floor.handoff_state(handoff_id) is HandoffState.CONNECTED
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AGENT))


async def test_two_agents_accepting_at_once_ring_one_phone(floor: Floor) -> None:
    caller, live = await floor.call()
    handoff_id = await floor.live.control.request_handoff(live.call_id, reason="caller_asked",
                                                          summary="x")
    outcomes = await asyncio.gather(floor.live.control.accept(handoff_id, floor.ada),
                                    floor.live.control.accept(handoff_id, floor.bob),
                                    return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyTaken", "NoneType"]
    assert len(floor.ari.dialled) == 1
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AGENT))
    with pytest.raises(AlreadyTaken):
        await floor.live.control.accept(handoff_id, floor.bob)


@pytest.mark.parametrize(("phone", "reason"), [
    ("no_answer", FailureReason.AGENT_NO_ANSWER),
    ("reject", FailureReason.AGENT_REJECTED),
    ("busy", FailureReason.AGENT_REJECTED),
])
async def test_an_agent_phone_that_does_not_answer_fails_the_attempt_and_reoffers(
    floor: Floor, phone: str, reason: FailureReason,
) -> None:
    floor.ari.phones["PJSIP/ada-desk"] = phone
    caller, live = await floor.call()
    first = await floor.live.control.request_handoff(live.call_id, reason="caller_asked",
                                                     summary="x")
    await floor.live.control.accept(first, floor.ada)

    async def reoffered() -> bool:
        return live.handoff_id not in (None, first)

    await until(reoffered)
    async with floor.store.transaction() as tx:
        failed = await tx.handoffs.get(first)
        again = await tx.handoffs.get(live.handoff_id or 0)
    assert (failed.state, failed.failure_reason) == (HandoffState.FAILED, reason)
    assert (again.state, again.attempt) == (HandoffState.OFFERED, 2)
    assert live.ai is not None and live.party is Party.AI  # the AI kept the caller
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.ABANDONED))


@pytest.mark.parametrize("step", ["with_ai", "card_offered", "agent_ringing", "with_agent"])
async def test_the_caller_hanging_up_at_any_step_ends_the_call_with_its_outcome(
    floor: Floor, step: str,
) -> None:
    floor.ari.phones["PJSIP/ada-desk"] = "ring"
    caller, live = await floor.call()
    if step != "with_ai":
        handoff_id = await floor.live.control.request_handoff(
            live.call_id, reason="caller_asked", summary="x")
    if step in ("agent_ringing", "with_agent"):
        await floor.live.control.accept(handoff_id, floor.ada)
    if step == "with_agent":
        await floor.ari.answer_phone(floor.ari.dialled[-1])
        await until(lambda: _is(live.party, Party.AGENT))
    await floor.ari.hang_up_phone(caller)
    expected = {"with_ai": CallOutcome.COMPLETED_BY_AI, "card_offered": CallOutcome.ABANDONED,
                "agent_ringing": CallOutcome.ABANDONED,
                "with_agent": CallOutcome.COMPLETED_BY_AGENT}[step]
    await until(lambda: _outcome_is(floor, live.call_id, expected))
    assert live.closed
    if step != "with_ai":
        expected_handoff = (HandoffState.COMPLETED if step == "with_agent"
                            else HandoffState.ABANDONED)
        assert await floor.handoff_state(handoff_id) is expected_handoff


async def test_the_agent_hanging_up_their_phone_ends_the_call_as_completed(
    floor: Floor,
) -> None:
    _, live, handoff_id = await floor.handed_to_ada()
    assert live.agent is not None
    await floor.ari.hang_up_phone(live.agent)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AGENT))
    assert await floor.handoff_state(handoff_id) is HandoffState.COMPLETED


async def test_an_agent_phone_lost_mid_call_gives_the_caller_back_to_the_ai_and_reoffers(
    floor: Floor,
) -> None:
    caller, live, handoff_id = await floor.handed_to_ada()
    assert live.agent is not None
    await floor.ari.lose_phone(live.agent)

    async def reoffered() -> bool:
        return live.handoff_id not in (None, handoff_id)

    await until(reoffered)
    assert live.ai is not None and live.party is Party.AI
    async with floor.store.transaction() as tx:
        lost = await tx.handoffs.get(handoff_id)
    assert lost.failure_reason is FailureReason.AGENT_VANISHED
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.ABANDONED))


async def test_return_to_ai_brings_a_new_ai_leg_before_the_agent_leaves(floor: Floor) -> None:
    caller, live, handoff_id = await floor.handed_to_ada()
    agent_leg = live.agent
    await floor.live.control.return_to_ai(live.call_id)
    assert live.ai is not None and live.agent is None and live.party is Party.AI
    assert agent_leg not in floor.ari.chans
    assert floor.ari.bridged[live.bridge] == {caller, live.ai}
    assert await floor.state(live.call_id) is CallState.WITH_AI
    assert await floor.handoff_state(handoff_id) is HandoffState.RETURNED_TO_AI
    with pytest.raises(CallStateConflict):  # nobody left to hand back
        await floor.live.control.return_to_ai(live.call_id)
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AI))


async def test_a_transfer_moves_the_caller_to_the_colleague_when_their_phone_answers(
    floor: Floor,
) -> None:
    floor.ari.phones["PJSIP/bob-desk"] = "ring"
    caller, live, first = await floor.handed_to_ada()
    ada_leg = live.agent
    transfer = await floor.live.control.transfer(live.call_id, floor.ada, floor.bob, "VIP")
    await floor.live.control.accept(transfer, floor.bob)
    [bob_leg] = floor.ari.legs("PJSIP/bob-desk")
    assert live.agent == ada_leg  # Ada keeps the caller while Bob's phone rings
    await floor.ari.answer_phone(bob_leg)

    async def moved() -> bool:
        return live.agent == bob_leg and ada_leg not in floor.ari.chans

    await until(moved)
    assert live.agent_id == floor.bob and ada_leg not in floor.ari.chans
    assert await floor.handoff_state(first) is HandoffState.COMPLETED
    assert await floor.handoff_state(transfer) is HandoffState.CONNECTED
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AGENT))


async def test_an_ai_leg_refused_once_is_replaced_and_twice_puts_the_caller_on_hold(
    floor: Floor,
) -> None:
    floor.ari.ai_refusals = 2
    caller = await floor.ari.caller_dials()

    async def person_asked_for() -> bool:
        return any(c.on_hold and c.handoff_id for c in floor.live.control.calls.values())

    await until(person_asked_for)
    [live] = floor.live.control.calls.values()
    assert live.bridge in floor.ari.moh and live.ai is None and live.ai_failures == 2
    async with floor.store.transaction() as tx:
        [handoff] = await tx.handoffs.for_call(live.call_id)
    assert handoff.reason == "ai_failed" and handoff.state is HandoffState.OFFERED
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.ABANDONED))


def test_the_live_call_lifecycles_refuse_what_makes_no_sense() -> None:
    with pytest.raises(InvalidTransition):
        PARTY.next_state(Party.AI, PartyEvent.CONNECT)  # connected without answering
    with pytest.raises(InvalidTransition):
        PARTY.next_state(Party.FORWARDED, PartyEvent.ANSWER)
    assert ENDING.next_state(Ending.LEAVING, EndingEvent.END) is Ending.HANGING_UP
    assert ENDING.next_state(Ending.CLOSED, EndingEvent.HANGUP_SEEN) is Ending.CLOSED


async def test_each_change_of_a_live_call_is_logged_from_event_to(
    floor: Floor, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="handoff.states"):
        caller, live, _ = await floor.handed_to_ada()
        await floor.ari.hang_up_phone(caller)
        await until(lambda: _is(live.closed, True))
    lines = [r.getMessage() for r in caplog.records if f"call={live.call_id}" in r.getMessage()]
    assert any("live party" in line and "ai -> answer -> agent_answered" in line
               for line in lines), lines
    assert any("live ending" in line and "-> close -> closed" in line for line in lines), lines


async def test_the_engine_learns_the_level_and_topics_and_a_callers_topic_gets_a_person(
    floor: Floor,
) -> None:
    async with floor.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_handoff_rules(
            receptionist.id, handoff_level=HandoffLevel.AI_ONLY, accept_timeout_s=30,
            fallback_kind=FallbackKind.AI_CALLBACK, fallback_number=None)
        await tx.assistants.set_restricted_topics(
            receptionist.id, [Topic("billing", ("billing dispute",))])
    async with floor.hub.subscribe(assistant_topic("receptionist")) as engine_hears:
        caller, live = await floor.call()
        started = await engine_hears.get()
    assert (started["type"], started["handoff_level"], started["restricted_topics"]) == (
        "call_started", "ai_only", ["billing"])

    policy = HandoffPolicy(floor.store, floor.live.control)
    async with floor.store.transaction() as tx:
        receptionist = await tx.assistants.get(receptionist.id)
    forced = await policy.caller_said(receptionist, live.call_id, "It's a BILLING dispute.")
    assert forced is not None
    async with floor.store.transaction() as tx:
        handoff = await tx.handoffs.get(forced.handoff_id)
    assert (handoff.state, handoff.reason, handoff.topic) == (
        HandoffState.OFFERED, "restricted_topic", "billing")
    assert await floor.state(live.call_id) is CallState.HANDOFF_PENDING
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.ABANDONED))


async def test_two_asks_for_a_person_at_once_put_one_card_on_the_desks(floor: Floor) -> None:
    caller, live = await floor.call()
    outcomes = await asyncio.gather(
        floor.live.control.request_handoff(live.call_id, reason="caller_asked", summary="x"),
        floor.live.control.request_handoff(live.call_id, reason="restricted_topic",
                                           summary="y", topic="billing"),
        return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["CallStateConflict", "int"]
    async with floor.store.transaction() as tx:
        assert len(await tx.handoffs.for_call(live.call_id)) == 1
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.ABANDONED))


async def test_a_card_nobody_took_has_its_callback_request_in_the_failures_transaction(
    floor: Floor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A controller killed right after the failure was written (here: the staged legs'
    # clean-up never returns) must not leave a failed handoff without its callback
    # request: after a restart that caller would be lost.
    caller, live = await floor.call()
    handoff_id = await floor.live.control.request_handoff(
        live.call_id, reason="caller_asked", summary="wants a person")

    class Killed(BaseException):
        pass

    async def killed(_live: LiveCall) -> None:
        raise Killed

    monkeypatch.setattr(floor.live.control.offers, "unstage", killed)
    with pytest.raises(Killed):
        await floor.live.control.offers.give_up(live, handoff_id, FailureReason.TIMEOUT)
    async with floor.store.transaction() as tx:
        assert (await tx.handoffs.get(handoff_id)).state is HandoffState.TIMED_OUT
        notes = [n.text for n in await tx.notes.for_call(live.call_id)]
    # What a restarted controller reads back (handoff.live.reconcile): the request.
    assert any(text.startswith(CALLBACK_NOTE) for text in notes), notes
    monkeypatch.undo()
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _ended(floor, live.call_id))


async def _ended(floor: Floor, call_id: str) -> bool:
    return await floor.state(call_id) is CallState.ENDED


async def test_a_burst_past_the_call_limit_is_refused_as_congestion_before_any_answer(
    floor: Floor,
) -> None:
    control, refusals = floor.live.control, list[str]()
    control.call_limit, control.on_refused = 2, refusals.append
    # Four callers at once: each StasisStart runs on its own lane, all before any call
    # is in the registry. Two get the AI; two are refused, never answered, no call row.
    callers = await asyncio.gather(*(floor.ari.caller_dials() for _ in range(4)))
    await floor.ari.idle()
    taken = [c for c in callers if c not in floor.ari.hangup_reasons]
    assert len(taken) == 2 and refusals == ["full", "full"]
    assert {floor.ari.hangup_reasons[c] for c in callers if c not in taken} == {"congestion"}
    async with floor.store.transaction() as tx:
        assert sorted(c.caller_channel_id for c in await tx.calls.open_calls()) == sorted(taken)
    # One hangs up: the next caller is let in.
    await floor.ari.hang_up_phone(taken[0])
    await floor.ari.idle()
    later = await floor.ari.caller_dials()
    await until(lambda: _has_ai(floor, later))
    for caller in (taken[1], later):
        await floor.ari.hang_up_phone(caller)


async def test_a_slow_handler_holds_up_only_its_own_calls_events_which_stay_in_order(
    floor: Floor, caplog: pytest.LogCaptureFixture,
) -> None:
    # R12's dispatch rule: a call's events (all its legs') are handled one after the
    # other, other calls' at the same time; an event that waits or runs past the budget
    # is counted by type and logged with its call.
    floor.ari.set_budget(0.05)
    (slow_caller, slow), (quick_caller, quick) = await floor.call(), await floor.call()
    held, release = asyncio.Event(), asyncio.Event()
    handled: list[str] = []  # the slow call's events, as its handlers finish

    async def hold(event: Event) -> None:
        if event["channel"]["id"] == slow_caller:
            held.set()
            await release.wait()
            await asyncio.sleep(0.1)  # past the budget on any machine

    async def record(event: Event) -> None:
        if call_key(event) == slow_caller:
            handled.append(f"{event['type']} {event.get('channel', {}).get('id')}")

    floor.ari.on("ChannelDtmfReceived", hold)
    floor.ari.on("*", record)
    await floor.ari.press(slow_caller, "5")
    async with asyncio.timeout(5):
        await held.wait()
    # Queued behind the held key press: the caller's hang-up, then the legs it takes.
    await floor.ari.hang_up_phone(slow_caller)
    # The other call is not held up: its caller hangs up and it ends meanwhile.
    await floor.ari.hang_up_phone(quick_caller)
    await until(lambda: _outcome_is(floor, quick.call_id, CallOutcome.COMPLETED_BY_AI))
    assert slow.call_id in floor.live.control.calls
    assert await floor.state(slow.call_id) is CallState.WITH_AI
    release.set()
    await until(lambda: _outcome_is(floor, slow.call_id, CallOutcome.COMPLETED_BY_AI))
    assert handled[:3] == [f"ChannelDtmfReceived {slow_caller}",
                           f"ChannelHangupRequest {slow_caller}", f"StasisEnd {slow_caller}"]
    # The key press ran long; the hang-up waited behind it: both counted and logged.
    assert floor.ari.stats.delayed["ChannelDtmfReceived"] == 1
    assert floor.ari.stats.delayed["ChannelHangupRequest"] >= 1
    delayed = [r.getMessage() for r in caplog.records if " delayed: " in r.getMessage()]
    assert any(f"call={slow.call_id}" in line and "ChannelHangupRequest" in line
               for line in delayed)


async def test_a_caller_who_hangs_up_while_being_answered_is_abandoned_without_an_error(
    floor: Floor,
) -> None:
    # The hang-up reaches Asterisk before the controller's answer does (the events that
    # say so are queued behind this StasisStart): the answer finds no channel.
    caller = await floor.ari.caller_dials()
    await floor.ari.hang_up_phone(caller)
    await floor.ari.idle()
    assert floor.ari.stats.errors == 0
    async with floor.store.engine.connect() as connection:
        outcomes = list(await connection.scalars(
            select(Call.outcome).where(Call.caller_channel_id == caller)))
    assert outcomes == [CallOutcome.ABANDONED]
