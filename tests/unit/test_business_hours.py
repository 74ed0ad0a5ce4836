"""Business hours: the spans an admin writes, read in the site's zone with a fake clock,
and the controller applying an assistant's fallback to a call that comes out of hours
(on the fake ARI; tests/integration/test_business_hours.py makes a real one)."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime

import pytest

from handoff.assistants import FallbackKind, HandoffLevel
from handoff.calls import CallOutcome
from handoff.events import assistant_topic
from handoff.handoffs import HandoffState
from handoff.hours import BadHours, Hours
from handoff.live.offer import CALLBACK_NOTE
from handoff.queues import Strategy
from tests.unit.test_live_calls import Floor, _outcome_is, floor  # noqa: F401
from tests.waiting import until

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
WEEKDAYS = Hours.parse(["mon-fri 09:00-17:00", "sat 10:00-12:30"], ["2026-12-25"])


def _at(text: str) -> datetime:
    """A moment given in Paris time, handed over in UTC as the clock gives it."""
    return datetime.fromisoformat(text).replace(tzinfo=PARIS).astimezone(UTC)


@pytest.mark.parametrize(("moment", "open_"), [
    ("2026-12-01 09:00", True),  # a Tuesday, as the office opens
    ("2026-12-01 08:59", False),
    ("2026-12-01 16:59", True),
    ("2026-12-01 17:00", False),  # the end is when it closes
    ("2026-12-05 12:00", True),  # Saturday morning
    ("2026-12-05 12:30", False),
    ("2026-12-06 11:00", False),  # Sunday
    ("2026-12-25 11:00", False),  # a Friday, but a holiday
    ("2026-07-01 09:30", True),  # summer time: 07:30 UTC is 09:30 in Paris
])
def test_hours_are_read_on_the_sites_clock(moment: str, open_: bool) -> None:
    assert WEEKDAYS.is_open(_at(moment), PARIS) is open_


def test_no_spans_and_no_holidays_is_always_open() -> None:
    hours = Hours.parse([], [])
    assert hours.always_open and hours.is_open(_at("2026-12-06 03:00"), PARIS)
    # Holidays alone close those days and leave the others open.
    only_holidays = Hours.parse([], ["2026-12-25"])
    assert not only_holidays.is_open(_at("2026-12-25 12:00"), PARIS)
    assert only_holidays.is_open(_at("2026-12-24 12:00"), PARIS)


def test_spans_are_kept_in_one_spelling() -> None:
    hours = Hours.parse(["Mon,Tue,Wed-Fri 9:00-17:00", "sat,sun 00:00-24:00"],
                        ["2026-12-26", "2026-12-25"])
    assert hours.span_texts() == ["mon-fri 09:00-17:00", "sat-sun 00:00-24:00"]
    assert hours.holiday_texts() == ["2026-12-25", "2026-12-26"]
    assert Hours.parse(hours.span_texts(), hours.holiday_texts()) == hours


@pytest.mark.parametrize(("spans", "holidays", "says"), [
    (["weekdays 9-5"], [], "write days and times"),
    (["mon-fri 17:00-09:00"], [], "two spans"),
    (["fri-mon 09:00-17:00"], [], "runs backwards"),
    (["mon 09:00-25:00"], [], "00:00 to 24:00"),
    (["mon 09:60-10:00"], [], "00:00 to 24:00"),
    (["moon 09:00-10:00"], [], "days are mon"),
    ([], ["25/12/2026"], "YYYY-MM-DD"),
])
def test_hours_that_cannot_be_read_are_refused_saying_why(
    spans: list[str], holidays: list[str], says: str,
) -> None:
    with pytest.raises(BadHours, match=says):
        Hours.parse(spans, holidays)


async def _set_hours(floor: Floor, hours: Hours) -> None:  # noqa: F811
    async with floor.store.transaction() as tx:
        assistant = await tx.assistants.by_name("receptionist")
        assert assistant is not None
        await tx.assistants.set_hours(assistant.id, hours)


async def test_a_call_out_of_hours_gets_the_fallback_and_new_hours_apply_to_the_next(
    floor: Floor,  # noqa: F811
) -> None:
    async with floor.store.transaction() as tx:
        assistant = await tx.assistants.by_name("receptionist")
        assert assistant is not None
        await tx.assistants.set_handoff_rules(
            assistant.id, handoff_level=HandoffLevel.BALANCED, accept_timeout_s=30,
            fallback_kind=FallbackKind.AI_CALLBACK, fallback_number=None)
    await _set_hours(floor, WEEKDAYS)
    floor.live.control.engines.zone = PARIS
    floor.live.control.engines.clock = lambda: _at("2026-12-06 11:00")  # a Sunday
    async with floor.hub.subscribe(assistant_topic("receptionist")) as engine_hears:
        caller, live = await floor.call()
        started = engine_hears.queue.get_nowait()
    # The engine hears it is out of hours, so it tells the caller rather than promise a
    # person; the AI keeps the caller and the call-back request is noted at once.
    assert (started["type"], started["out_of_hours"]) == ("call_started", True)

    async def noted() -> bool:
        return live.callback_requested

    await until(noted)
    async with floor.store.transaction() as tx:
        notes = [n.text for n in await tx.notes.for_call(live.call_id)]
    assert notes == [f"{CALLBACK_NOTE} called out of hours."]
    assert live.ai is not None
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.CALLBACK_REQUESTED))

    # Sunday opening hours, saved while Switchboard runs: the next call is in hours.
    await _set_hours(floor, Hours.parse(["mon-fri 09:00-17:00", "sun 10:00-12:00"]))
    async with floor.hub.subscribe(assistant_topic("receptionist")) as engine_hears:
        caller, live = await floor.call()
        started = engine_hears.queue.get_nowait()
    assert started["out_of_hours"] is False
    async with floor.store.transaction() as tx:
        assert not await tx.notes.for_call(live.call_id)
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AI))


async def test_a_card_for_a_queue_out_of_its_hours_gets_the_fallback_at_once(
    floor: Floor,  # noqa: F811
) -> None:
    async with floor.store.transaction() as tx:
        queue = await tx.queues.create(name="desk", strategy=Strategy.OFFER_ALL, ring_s=20,
                                       max_wait_s=60, service_level_s=20, no_answer_limit=3,
                                       hours=WEEKDAYS.span_texts())
        await tx.queues.set_members(queue.id, [(floor.ada, 3)])
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.queues.set_assistants(queue.id, [receptionist.id])
    floor.live.control.engines.zone = PARIS
    floor.live.control.engines.clock = lambda: _at("2026-12-01 20:00")  # Tuesday evening
    caller, live = await floor.call()
    handoff_id = await floor.live.control.request_handoff(live.call_id, reason="caller_asked",
                                                          summary="x")

    async def failed() -> bool:
        return await floor.handoff_state(handoff_id) is HandoffState.FAILED

    await until(failed)  # Ada is on duty, but her queue is closed: no card rings
    assert live.callback_requested
    # In its hours, the same queue offers the card.
    floor.live.control.engines.clock = lambda: _at("2026-12-02 10:00")
    again = await floor.live.control.request_handoff(live.call_id, reason="caller_asked",
                                                     summary="x")
    assert await floor.handoff_state(again) is HandoffState.OFFERED
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.ABANDONED))
