"""Nothing is lost when the controller loses Asterisk, or Asterisk loses everything:
every call continues or ends with a recorded outcome, and no leg or bridge is left."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from handoff.agents import Presence
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.store.models import Call
from tests.integration.asterisk_helpers import Pair, ari, assert_quiet, gone
from tests.waiting import until
from web.bench.rig import Rig, rig
from web.bench.world import World, local_world

pytestmark = pytest.mark.integration


async def call_row(r: Rig, call_id: str) -> Call:
    async with r.store.transaction() as tx:
        return await tx.calls.get(call_id)


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


async def test_event_socket_cut_mid_call_is_reconciled_and_the_call_goes_on(
    quiet_pair: Pair, world: World, tmp_path: Path
) -> None:
    async with rig(quiet_pair.pbx, world, tmp_path / "db.sqlite") as r:
        placed = await r.place_call()
        await r.hand_to_agent(placed)
        connects = r.pbx_ari.stats.connects
        await r.pbx.cli("ari shutdown websocket sessions")
        await until(lambda: r.pbx_ari.stats.connects > connects
                    and r.pbx_ari.status == "connected")
        cut_over = time.monotonic()
        await r.wait_hears(placed, "agent", after=cut_over)  # the human part goes on
        # Events flow again: the caller's hang-up is seen and closes the call properly.
        await r.hang_up_caller(placed)
        await until(lambda: _ended(r, placed.call_id))
        row = await call_row(r, placed.call_id)
        assert row.outcome is CallOutcome.COMPLETED_BY_AGENT


async def test_restarted_controller_adopts_live_calls_and_cleans_up_ended_ones(
    quiet_pair: Pair, world: World, tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    async with rig(quiet_pair.pbx, world, db, check_ledger=False) as first:
        staying = await first.place_call()
        leaving = await first.place_call()
        leaving_leg = first.control.calls[leaving.call_id].caller
        handoff_id, _ = await first.hand_to_agent(staying)
    # The first controller is gone without hanging anything up (as after a crash).
    # While nobody listens, one caller hangs up: their leg leaves the PBX unnoticed.
    await first.hang_up_caller(leaving)
    await until(lambda: gone(quiet_pair.pbx, f"/channels/{leaving_leg}"))
    async with rig(quiet_pair.pbx, world, db) as second:
        assert staying.call_id in second.control.calls
        assert leaving.call_id not in second.control.calls
        row = await call_row(second, leaving.call_id)
        assert row.state is CallState.ENDED and row.outcome is CallOutcome.COMPLETED_BY_AI
        assert (await call_row(second, staying.call_id)).state is CallState.WITH_AGENT
        now = time.monotonic()
        await second.wait_hears(staying, "agent", after=now)
        # Only the adopted call's caller, agent and bridge remain in Asterisk.
        live = second.control.calls[staying.call_id]
        _, app = await ari(second.pbx, "GET", "/applications/switchboard")
        assert set(app["channel_ids"]) == {live.caller, live.agent}
        await second.control.return_to_ai(staying.call_id)
        await second.wait_hears(staying, "ai", after=time.monotonic())
        await second.hang_up_caller(staying)
        await until(lambda: _ended(second, staying.call_id))
        async with second.store.transaction() as tx:
            handoff = await tx.handoffs.get(handoff_id)
        assert handoff.state is HandoffState.RETURNED_TO_AI


@pytest.mark.parametrize("how", ["graceful", "crash"])
async def test_asterisk_restart_ends_calls_as_pbx_restart_and_the_controller_recovers(
    pair: Pair, world: World, tmp_path: Path, how: str
) -> None:
    async with rig(pair.pbx, world, tmp_path / "db.sqlite") as r:
        placed = await r.place_call()
        handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                     summary="x")
        if how == "graceful":
            await pair.pbx.restart()  # `core stop now`: Asterisk hangs up every channel
        else:
            await pair.pbx.kill()  # no events at all: only reconciliation can tell
            await pair.pbx.start()
        await until(lambda: _ended(r, placed.call_id), within=30)
        row = await call_row(r, placed.call_id)
        assert row.outcome is CallOutcome.PBX_RESTART
        async with r.store.transaction() as tx:
            handoff = await tx.handoffs.get(handoff_id)
        assert handoff.state is HandoffState.FAILED
        assert handoff.failure_reason is FailureReason.PBX_RESTART
        # After a crash the carrier never got a BYE for that call: it lets it go.
        if how == "crash":
            await r.hang_up_caller(placed)
        # The controller took up its work again by itself: a new call is answered.
        await until(lambda: r.pbx_ari.status == "connected", within=30)
        again = await r.place_call()
        await r.wait_hears(again, "ai")
        await r.hang_up_caller(again)
        await until(lambda: _ended(r, again.call_id))
    await assert_quiet(pair.pbx)
    await assert_quiet(pair.carrier)


async def _ended(r: Rig, call_id: str) -> bool:
    return (await call_row(r, call_id)).state is CallState.ENDED


async def test_a_transfer_under_way_at_a_restart_is_cancelled_and_the_agent_keeps_the_caller(
    quiet_pair: Pair, world: World, tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    async with rig(quiet_pair.pbx, world, db, check_ledger=False) as first:
        placed = await first.place_call()
        handoff_id, live = await first.hand_to_agent(placed, settled=True)
        async with first.store.transaction() as tx:
            await tx.agents.set_duty(first.supervisor_id, True)  # Sam can take a transfer
            await tx.agents.set_presence(first.supervisor_id, Presence.AVAILABLE)
        transfer_id = await first.control.transfer(placed.call_id, first.agent_id,
                                                   first.supervisor_id, "knows the file")
    # The controller stops with Sam's card on offer; the next one starts.
    async with rig(quiet_pair.pbx, world, db) as second:
        async with second.store.transaction() as tx:
            transfer = await tx.handoffs.get(transfer_id)
            kept = await tx.handoffs.get(handoff_id)
        assert transfer.state is HandoffState.FAILED
        assert transfer.failure_reason is FailureReason.CANCELLED
        assert kept.state is HandoffState.CONNECTED
        live = second.control.calls[placed.call_id]
        assert live.connected and live.agent_id == second.agent_id and live.transfer is None
        await second.wait_hears(placed, "agent", after=time.monotonic())
        # Ada still has the call in every way: she can hand it back to the AI.
        await second.control.return_to_ai(placed.call_id)
        await second.wait_hears(placed, "ai", after=time.monotonic())
        await second.hang_up_caller(placed)
        await until(lambda: _ended(second, placed.call_id))


async def test_an_agent_leg_lost_during_a_restart_fails_the_attempt_and_reoffers(
    quiet_pair: Pair, world: World, tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    async with rig(quiet_pair.pbx, world, db, check_ledger=False) as first:
        placed = await first.place_call()
        handoff_id, live = await first.hand_to_agent(placed, settled=True)
        agent_leg = live.agent
        assert agent_leg is not None
    # While no controller runs, the agent's leg goes (her browser closed) and the AI
    # engine went with the old controller: the caller is alone in the bridge.
    await ari(quiet_pair.pbx, "DELETE", f"/channels/{agent_leg}")
    await until(lambda: gone(quiet_pair.pbx, f"/channels/{agent_leg}"))
    async with rig(quiet_pair.pbx, world, db) as second:
        await second.wait_hears(placed, "ai", after=time.monotonic())
        async with second.store.transaction() as tx:
            lost = await tx.handoffs.get(handoff_id)
            attempts = list(await tx.handoffs.for_call(placed.call_id))
        assert lost.state is HandoffState.FAILED
        assert lost.failure_reason is FailureReason.AGENT_VANISHED
        await until(lambda: _reoffered(second, placed.call_id))
        async with second.store.transaction() as tx:
            attempts = list(await tx.handoffs.for_call(placed.call_id))
        assert attempts[-1].attempt == 2 and attempts[-1].state is HandoffState.OFFERED
        await second.hang_up_caller(placed)
        await until(lambda: _ended(second, placed.call_id))


async def _reoffered(r: Rig, call_id: str) -> bool:
    async with r.store.transaction() as tx:
        attempts = list(await tx.handoffs.for_call(call_id))
    return len(attempts) == 2 and attempts[-1].state is HandoffState.OFFERED


async def test_a_card_on_offer_at_a_restart_times_out_on_its_assistants_own_clock(
    quiet_pair: Pair, world: World, tmp_path: Path
) -> None:
    # Sales gives a card 2 s before its outside line takes the caller; a restarted
    # controller used 30 s whatever the assistant said.
    db = tmp_path / "db.sqlite"
    async with rig(quiet_pair.pbx, world, db, check_ledger=False) as first:
        placed = await first.place_call("2100")
        handoff_id = await first.control.request_handoff(placed.call_id,
                                                         reason="caller_asked", summary="x")
    async with rig(quiet_pair.pbx, world, db) as second:
        async def timed_out() -> bool:
            async with second.store.transaction() as tx:
                return (await tx.handoffs.get(handoff_id)).state is HandoffState.TIMED_OUT

        async def forwarded() -> bool:
            return (await call_row(second, placed.call_id)).state is CallState.FORWARDED

        await until(timed_out, within=10)
        await until(forwarded, within=10)
        await second.hang_up_caller(placed)
        await until(lambda: _ended(second, placed.call_id))
        assert (await call_row(second, placed.call_id)).outcome is CallOutcome.FALLBACK_NUMBER
