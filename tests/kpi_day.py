"""A scripted day of calls for the KPI figures, written straight into the store with
known times, so every figure has an answer worked out by hand (tests/unit/test_kpis.py
states them; the browser test reads the same day off the page).

The day, in the site's time (two assistants, two queues, four agents):

  00:30 sales    AI alone                                   contained (site day, not UTC's)
  09:05 sales    AI alone                                   contained
  09:10 sales    AI alone                                   contained
  09:20 support  asked for a person, billing: Alice in 8 s, 240 s talk
  10:02 support  restricted topic, billing: Bob in 30 s, 120 s talk
  10:40 sales    asked for a person, general: hung up after 45 s   abandoned
  11:15 sales    AI could not help, general: Alice in 12 s, 120 s talk, back to the AI,
                 which ends the call (not contained: a person was on it)
  14:30 support  asked for a person, billing: Bob in 5 s, his leg failed; attempt 2:
                 Alice in 20 s, 300 s talk
  15:00          Alice's call-back (outbound: not counted)
  16:00 sales    AI alone                                   contained
  16:30 sales    asked for a person, general: nobody in 60 s, call-back requested
  16:50 sales    still up (no outcome: not counted)
  next day 00:10 sales AI alone (not this day)

Presence: Alice available 08:55, wrap-up 09:25:10-09:26:10, lunch 12:00-13:00,
wrap-up 14:36:42-14:38:12, off duty 17:00. Bob away for training since 23:00 the day
before until 00:20, wrap-up 10:05:32-10:06:02, away (no reason) 15:00-15:10, away for
lunch from 23:50 (until the day ends). Carol available 09:00, off duty 10:00. Dave
went off duty the evening before and stayed off: he is nobody's figure.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from sqlalchemy.ext.asyncio import AsyncSession

from handoff.agents import AgentState
from handoff.calls import CallDirection, CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.queues import Strategy
from handoff.store import Store
from handoff.store.models import AgentStateChange, Call, Handoff

DAY = date(2026, 3, 10)


@dataclass(frozen=True)
class Day:
    sales: int
    support: int
    billing: int
    general: int
    alice: int
    bob: int
    carol: int


async def script_day(store: Store, zone: tzinfo, *, alice: int, bob: int,
                     day: date = DAY) -> Day:
    """Write the day into `store`; `alice` and `bob` are agents already there."""

    def at(clock: str, days: int = 0) -> datetime:
        local = datetime.combine(day + timedelta(days=days), time.fromisoformat(clock), zone)
        return local.astimezone(UTC)

    async with store.transaction() as tx:
        sales = await tx.assistants.create(name="sales", numbers=["2100"],
                                           control_token_hash="x")
        support = await tx.assistants.create(name="support", numbers=["2200"],
                                             control_token_hash="y")
        queues = {}
        for name, threshold in (("billing", 20), ("general", 30)):
            queues[name] = await tx.queues.create(
                name=name, strategy=Strategy.OFFER_ALL, ring_s=15, max_wait_s=60,
                service_level_s=threshold, no_answer_limit=0)
        lunch = await tx.pause_reasons.add("Lunch", productive=False)
        training = await tx.pause_reasons.add("Training", productive=True)
        carol = await tx.agents.create(login="carol", display_name="Carol",
                                       sip_user="sb-carol", sip_password="sip-carol")
        dave = await tx.agents.create(login="dave", display_name="Dave",
                                      sip_user="sb-dave", sip_password="sip-dave")
    billing, general = queues["billing"].id, queues["general"].id

    rows: list[object] = []

    def call(start: str, assistant: int, outcome: CallOutcome | None, *, days: int = 0,
             end: str | None = None,
             direction: CallDirection = CallDirection.INBOUND) -> str:
        call_id = str(uuid.uuid4())
        ended = at(end or start, days) + (timedelta(minutes=3) if end is None else timedelta())
        rows.append(Call(
            id=call_id, assistant_id=assistant, caller_number="+33100000000",
            caller_channel_id=f"ch-{call_id}", direction=direction,
            state=CallState.ENDED if outcome else CallState.WITH_AI, outcome=outcome,
            started_at=at(start, days), answered_at=at(start, days),
            ended_at=ended if outcome else None, version=1))
        return call_id

    def handoff(call_id: str, reason: str, queue: int, requested: str, *,
                state: HandoffState, accepted_after_s: float | None = None,
                by: int | None = None, talk_s: float | None = None,
                ended: str | None = None, attempt: int = 1) -> None:
        asked = at(requested)
        accepted = None if accepted_after_s is None else asked + timedelta(
            seconds=accepted_after_s)
        # The agent's phone answers 2 s after the accept; the talk runs from there.
        connected = None if talk_s is None or accepted is None else accepted + timedelta(
            seconds=2)
        end = (connected + timedelta(seconds=talk_s) if connected and talk_s is not None
               else at(ended) if ended else accepted)
        rows.append(Handoff(
            call_id=call_id, state=state, reason=reason, priority=0, requested_at=asked,
            offered_at=asked, accepted_at=accepted, accepted_by=by, connected_at=connected,
            ended_at=end, attempt=attempt, version=1, queue_id=queue))

    done = CallOutcome.COMPLETED_BY_AI
    by_agent = CallOutcome.COMPLETED_BY_AGENT
    for start in ("00:30:00", "09:05:00", "09:10:00", "16:00:00"):
        call(start, sales.id, done)
    c3 = call("09:20:00", support.id, by_agent, end="09:25:10")
    handoff(c3, "caller_asked", billing, "09:21:00", state=HandoffState.COMPLETED,
            accepted_after_s=8, by=alice, talk_s=240)
    c4 = call("10:02:00", support.id, by_agent, end="10:05:32")
    handoff(c4, "restricted_topic", billing, "10:03:00", state=HandoffState.COMPLETED,
            accepted_after_s=30, by=bob, talk_s=120)
    c5 = call("10:40:00", sales.id, CallOutcome.ABANDONED, end="10:41:45")
    handoff(c5, "caller_asked", general, "10:41:00", state=HandoffState.ABANDONED,
            ended="10:41:45")
    c6 = call("11:15:00", sales.id, done, end="11:20:00")
    handoff(c6, "ai_cannot_help", general, "11:16:00", state=HandoffState.RETURNED_TO_AI,
            accepted_after_s=12, by=alice, talk_s=120)
    c7 = call("14:30:00", support.id, by_agent, end="14:36:42")
    handoff(c7, "caller_asked", billing, "14:31:00", state=HandoffState.FAILED,
            accepted_after_s=5, by=bob, ended="14:31:20")
    handoff(c7, "caller_asked", billing, "14:31:20", state=HandoffState.COMPLETED,
            accepted_after_s=20, by=alice, talk_s=300, attempt=2)
    call("15:00:00", sales.id, by_agent, direction=CallDirection.OUTBOUND)
    c9 = call("16:30:00", sales.id, CallOutcome.CALLBACK_REQUESTED, end="16:33:00")
    handoff(c9, "caller_asked", general, "16:31:00", state=HandoffState.TIMED_OUT,
            ended="16:32:00")
    call("16:50:00", sales.id, None)
    call("00:10:00", sales.id, done, days=1)

    def state(agent: int, clock: str, entered: AgentState, reason: int | None = None,
              days: int = 0) -> None:
        rows.append(AgentStateChange(agent_id=agent, at=at(clock, days), state=entered.value,
                                     pause_reason_id=reason))

    state(alice, "08:55:00", AgentState.AVAILABLE)
    state(alice, "09:25:10", AgentState.WRAP_UP)
    state(alice, "09:26:10", AgentState.AVAILABLE)
    state(alice, "12:00:00", AgentState.AWAY, lunch.id)
    state(alice, "13:00:00", AgentState.AVAILABLE)
    state(alice, "14:36:42", AgentState.WRAP_UP)
    state(alice, "14:38:12", AgentState.AVAILABLE)
    state(alice, "17:00:00", AgentState.OFF_DUTY)
    state(bob, "23:00:00", AgentState.AWAY, training.id, days=-1)
    state(bob, "00:20:00", AgentState.AVAILABLE)
    state(bob, "10:05:32", AgentState.WRAP_UP)
    state(bob, "10:06:02", AgentState.AVAILABLE)
    state(bob, "15:00:00", AgentState.AWAY)
    state(bob, "15:10:00", AgentState.AVAILABLE)
    state(bob, "23:50:00", AgentState.AWAY, lunch.id)
    state(carol.id, "09:00:00", AgentState.AVAILABLE)
    state(carol.id, "10:00:00", AgentState.OFF_DUTY)
    state(dave.id, "09:00:00", AgentState.AVAILABLE, days=-1)
    state(dave.id, "17:00:00", AgentState.OFF_DUTY, days=-1)

    # The rows as the controller and the desks would have left them, times and all.
    async with AsyncSession(store.engine) as session, session.begin():
        session.add_all([row for row in rows if isinstance(row, Call)])
        await session.flush()
        session.add_all([row for row in rows if not isinstance(row, Call)])
    return Day(sales.id, support.id, billing, general, alice, bob, carol.id)
