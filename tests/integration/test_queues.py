"""Queues on real Asterisk, with several agents: Ada's and Sam's desk phones (lines of the
carrier Asterisk that answer with their own tones: the caller hears which of the two
has them) and Bea's, a real SIP desk phone (tests.sip_phone) that registers, rings and
answers. A caller from the carrier asks for a person; the queue's strategy decides whose
desk the card reaches, a card nobody takes moves on (and its staged leg leaves the call
bridge), the maximum wait puts the caller through to the fallback number, and a transfer
to a queue reaches its free member."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import insert

from handoff.agents import EndpointKind, Presence
from handoff.assistants import FallbackKind, HandoffLevel
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.live import Timing
from handoff.queues import OfferOutcome, Strategy
from handoff.store import NotOfferable
from handoff.store.models import Handoff, QueueRecord
from handoff.store.transitions import utc_now
from tests.integration.asterisk_helpers import Pair
from tests.sip_phone import SipPhone
from tests.waiting import until
from web.bench.rig import (
    DESK_PHONE_PASSWORD,
    DESK_PHONE_SIP_USER,
    PlacedCall,
    Rig,
    rig,
)
from web.bench.world import FALLBACK_NUMBER, local_world

pytestmark = pytest.mark.integration


@dataclass
class Floor:
    r: Rig
    bea_phone: SipPhone
    ada: int
    sam: int
    bea: int

    async def queue(self, strategy: Strategy, members: list[tuple[int, int]], *,
                    assistant: str | None = "receptionist", ring_s: int = 2,
                    max_wait_s: int = 60, limit: int = 3) -> QueueRecord:
        async with self.r.store.transaction() as tx:
            queue = await tx.queues.create(
                name=f"q-{strategy.value}", strategy=strategy, ring_s=ring_s,
                max_wait_s=max_wait_s, service_level_s=20, no_answer_limit=limit)
            await tx.queues.set_members(queue.id, members)
            if assistant is not None:
                found = await tx.assistants.by_name(assistant)
                assert found is not None
                await tx.queues.set_assistants(queue.id, [found.id])
        return queue

    async def ask(self, placed: PlacedCall) -> int:
        return await self.r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                    summary="wants a person")

    async def holder(self, handoff_id: int) -> int | None:
        async with self.r.store.transaction() as tx:
            handoff = await tx.handoffs.get(handoff_id)
        return handoff.target_agent_id if handoff.state is HandoffState.OFFERED else None

    async def held_by(self, handoff_id: int, agent_id: int) -> None:
        async def check() -> bool:
            return await self.holder(handoff_id) == agent_id

        await until(check, 15, why=f"handoff {handoff_id} never reached agent {agent_id}")

    async def ended(self, placed: PlacedCall) -> None:
        async def check() -> bool:
            async with self.r.store.transaction() as tx:
                return (await tx.calls.get(placed.call_id)).state is CallState.ENDED

        await until(check)


@pytest_asyncio.fixture
async def floor(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[Floor]:
    """Ada (the rig's agent) and Sam at their desks, and Bea with her desk phone
    registered; everyone on duty and available."""
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r,
    ):
        async with r.store.transaction() as tx:
            await tx.agents.set_duty(r.supervisor_id, True)
            bea = await tx.agents.create(
                login="bea", display_name="Bea", sip_user=DESK_PHONE_SIP_USER,
                sip_password=DESK_PHONE_PASSWORD, endpoint_kind=EndpointKind.DESKPHONE)
            await tx.agents.set_duty(bea.id, True)
        pbx_sip = ("127.0.0.1", quiet_pair.pbx.spec.ports.sip)
        async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, pbx_sip) as phone:
            await until(lambda: r.control.phone_registered(DESK_PHONE_SIP_USER))
            yield Floor(r, phone, r.agent_id, r.supervisor_id, bea.id)


async def _staged_leg_of(floor: Floor, placed: PlacedCall, agent_id: int) -> str | None:
    return floor.r.control.calls[placed.call_id].staged.get(agent_id)


async def test_round_robin_moves_a_missed_card_on_and_sets_away_a_member_at_the_limit(
    floor: Floor,
) -> None:
    r = floor.r
    queue = await floor.queue(Strategy.ROUND_ROBIN, [(floor.bea, 3), (floor.sam, 3)],
                              ring_s=1, limit=1)
    placed = await r.place_call()
    handoff_id = await floor.ask(placed)
    await floor.held_by(handoff_id, floor.bea)
    # Bea's leg waits in the call bridge, undialled, for her Accept...
    bea_leg = await until(lambda: _staged_leg_of(floor, placed, floor.bea))
    assert bea_leg in {c["id"] for c in await r.pbx_ari.channels.list()}
    # ...which never comes: after her ring window the card is Sam's, and with a limit of
    # one miss she is set away.
    await floor.held_by(handoff_id, floor.sam)
    async with r.store.transaction() as tx:
        assert (await tx.agents.get(floor.bea)).presence is Presence.AWAY
        [line] = [e for e in await tx.audit.recent()
                  if e.detail.get("event") == "missed_offers"]
    assert (line.actor, line.subject, line.detail["queue"]) == (
        "controller", f"agent:{floor.bea}", queue.name)

    async def bea_leg_left() -> bool:  # her staged leg leaves the bridge with the card
        return bea_leg not in {c["id"] for c in await r.pbx_ari.channels.list()}

    await until(bea_leg_left)
    with pytest.raises(NotOfferable):
        await r.control.accept(handoff_id, floor.bea)  # too late: the card is Sam's
    asked = time.monotonic()
    await r.control.accept(handoff_id, floor.sam)
    await r.wait_hears(placed, "supervisor", after=asked)  # Sam's phone has the caller
    async with r.store.transaction() as tx:
        offers = [(o.agent_id, o.outcome, o.set_away) for o in await tx.queues.offers(queue.id)]
    assert offers == [(floor.bea, OfferOutcome.NO_ANSWER, True),
                      (floor.sam, OfferOutcome.ACCEPTED, False)]
    assert bea_phone_never_rang(floor)
    await r.hang_up_caller(placed)
    await floor.ended(placed)


def bea_phone_never_rang(floor: Floor) -> bool:
    return floor.bea_phone.invites == 0


async def _finished_call(floor: Floor, agent_id: int, minutes_ago: int) -> None:
    """A call the agent took earlier, over `minutes_ago` minutes ago (what longest idle
    reads)."""
    ended = utc_now() - timedelta(minutes=minutes_ago)
    async with floor.r.store.transaction() as tx:
        call = await tx.calls.create(caller_number="+3310", caller_channel_id=f"old-{agent_id}")
        await tx.calls.close(call.id, CallOutcome.COMPLETED_BY_AGENT, end_cause="earlier")
    async with floor.r.store.engine.begin() as connection:
        await connection.execute(insert(Handoff).values(
            call_id=call.id, state=HandoffState.COMPLETED, reason="caller_request",
            priority=0, requested_at=ended, accepted_by=agent_id, accepted_at=ended,
            ended_at=ended, attempt=1, version=1))


async def test_longest_idle_gives_the_card_to_the_member_idle_longest(floor: Floor) -> None:
    r = floor.r
    await _finished_call(floor, floor.ada, minutes_ago=1)
    await _finished_call(floor, floor.sam, minutes_ago=30)
    await floor.queue(Strategy.LONGEST_IDLE, [(floor.ada, 3), (floor.sam, 3)])
    placed = await r.place_call()
    handoff_id = await floor.ask(placed)
    await floor.held_by(handoff_id, floor.sam)
    asked = time.monotonic()
    await r.control.accept(handoff_id, floor.sam)
    await r.wait_hears(placed, "supervisor", after=asked)
    await r.hang_up_caller(placed)
    await floor.ended(placed)


async def test_skills_weighted_rings_the_best_members_desk_phone(floor: Floor) -> None:
    r = floor.r
    await floor.queue(Strategy.SKILLS_WEIGHTED, [(floor.sam, 2), (floor.bea, 5), (floor.ada, 4)])
    placed = await r.place_call()
    handoff_id = await floor.ask(placed)
    await floor.held_by(handoff_id, floor.bea)
    asked = time.monotonic()
    await r.control.accept(handoff_id, floor.bea)
    call = await floor.bea_phone.wait_call()  # her own phone rings and answers
    await floor.bea_phone.wait_hears(call, "caller")
    await r.wait_hears(placed, "agent", after=asked)
    await r.hang_up_caller(placed)
    await floor.ended(placed)


async def test_offer_all_shows_the_card_to_every_member_and_the_first_accept_wins(
    floor: Floor,
) -> None:
    r = floor.r
    await floor.queue(Strategy.OFFER_ALL, [(floor.ada, 3), (floor.sam, 3)])
    placed = await r.place_call()
    handoff_id = await floor.ask(placed)
    live = r.control.calls[placed.call_id]
    assert sorted(live.staged) == sorted([floor.ada, floor.sam])  # the members' legs only
    with pytest.raises(NotOfferable, match="members of queue"):
        await r.control.accept(handoff_id, floor.bea)
    asked = time.monotonic()
    await r.control.accept(handoff_id, floor.sam)
    await r.wait_hears(placed, "supervisor", after=asked)
    await r.hang_up_caller(placed)
    await floor.ended(placed)


async def test_the_maximum_wait_puts_the_caller_through_to_the_fallback_number(
    floor: Floor,
) -> None:
    r = floor.r
    async with r.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
        assert sales is not None
        # The assistant alone would wait 30 s; the queue's maximum is what applies.
        await tx.assistants.set_handoff_rules(
            sales.id, handoff_level=HandoffLevel.BALANCED, accept_timeout_s=30,
            fallback_kind=FallbackKind.NUMBER, fallback_number=FALLBACK_NUMBER)
        # Bea, the only member, is in wrap-up: she will be back, so the caller waits.
        await tx.agents.set_presence(floor.bea, Presence.WRAP_UP)
    await floor.queue(Strategy.ROUND_ROBIN, [(floor.bea, 3)], assistant="sales",
                      max_wait_s=2)
    placed = await r.place_call("2101")
    handoff_id = await floor.ask(placed)

    async def forwarded() -> bool:
        async with r.store.transaction() as tx:
            return (await tx.calls.get(placed.call_id)).state is CallState.FORWARDED

    await until(forwarded, 15)
    async with r.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    assert (handoff.state, handoff.failure_reason) == (HandoffState.TIMED_OUT,
                                                        FailureReason.TIMEOUT)
    assert bea_phone_never_rang(floor)
    await r.hang_up_caller(placed)
    await floor.ended(placed)


async def test_a_transfer_to_a_queue_reaches_its_free_member(floor: Floor) -> None:
    r = floor.r
    placed = await r.place_call()
    first, live = await r.hand_to_agent(placed, settled=True)  # no queue yet: Ada takes it
    queue = await floor.queue(Strategy.ROUND_ROBIN, [(floor.ada, 3), (floor.sam, 3)],
                              assistant=None)
    transfer = await r.control.transfer_to_queue(placed.call_id, floor.ada, queue.id,
                                                 "wants the manager")
    # Ada is on this very call: the queue's card goes to Sam.
    await floor.held_by(transfer, floor.sam)
    ada_leg = live.agent
    asked = time.monotonic()
    await r.control.accept(transfer, floor.sam)
    await r.wait_hears(placed, "supervisor", after=asked)

    async def moved() -> bool:
        return live.agent_id == floor.sam and live.transfer is None

    await until(moved)

    async def ada_left() -> bool:  # her leg is released just after the move is recorded
        return ada_leg not in {c["id"] for c in await r.pbx_ari.channels.list()}

    await until(ada_left)
    async with r.store.transaction() as tx:
        assert (await tx.handoffs.get(first)).state is HandoffState.COMPLETED
        stats = await tx.queues.stats(queue.id)
    assert (stats.entered, stats.answered, stats.waiting) == (1, 1, 0)
    await r.hang_up_caller(placed)
    await floor.ended(placed)

    async def lines() -> set[tuple[str, int | None]] | None:
        async with r.store.transaction() as tx:
            rows = await tx.quality.for_call(placed.call_id)
        return {(row.leg, row.handoff_id) for row in rows} if len(rows) == 3 else None

    # Each person's line has its quality record under their own handoff.
    assert await until(lines) == {("caller", None), ("agent", first), ("agent", transfer)}

async def test_the_agent_wraps_up_for_the_time_of_the_queue_the_call_came_from(
    quiet_pair: Pair, tmp_path: Path,
) -> None:
    # The site gives no wrap-up at all; the queue gives its agents one second.
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db", Timing(wrap_up_s=0)) as r,
    ):
        async with r.store.transaction() as tx:
            receptionist = await tx.assistants.by_name("receptionist")
            assert receptionist is not None
            queue = await tx.queues.create(
                name="orders", strategy=Strategy.OFFER_ALL, ring_s=5, max_wait_s=60,
                service_level_s=20, no_answer_limit=3, wrap_up_s=1)
            await tx.queues.set_members(queue.id, [(r.agent_id, 3)])
            await tx.queues.set_assistants(queue.id, [receptionist.id])
        placed = await r.place_call()
        handoff_id, _ = await r.hand_to_agent(placed, settled=True)
        async with r.store.transaction() as tx:
            assert (await tx.handoffs.get(handoff_id)).queue_id == queue.id
        await r.hang_up_caller(placed)

        async def presence_is(presence: Presence) -> bool:
            async with r.store.transaction() as tx:
                return (await tx.agents.get(r.agent_id)).presence is presence

        await until(lambda: presence_is(Presence.WRAP_UP), why="Ada never wrapped up")
        await until(lambda: presence_is(Presence.AVAILABLE), why="her wrap-up never ended")
        async with r.store.transaction() as tx:
            began = [line for line in await tx.audit.recent()
                     if line.detail.get("event") == "wrap_up_begins"]
        assert [line.detail["queue"] for line in began] == ["orders"]
