"""A supervisor on live calls: listen, whisper, barge and take over, on real Asterisk.

Sam, the supervisor, is a desk phone the carrier plays (7002); it answers at once and
speaks the supervisor's tone. Ada is the agent's desk phone, the caller and the AI
speak their own tones: what each party hears says who is connected to whom.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.store.audit_repo import AuditRepo
from handoff.store.models import Agent, SupervisionRecord
from handoff.supervision import Mode, Supervision, SupervisionRefused, Supervisor
from tests.integration.asterisk_helpers import Pair
from tests.waiting import until
from web.bench.audio import FRAME, RtpProbe, present, ulaw_decode
from web.bench.rig import PlacedCall, Rig, rig
from web.bench.world import local_world

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def sup_rig(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[tuple[Rig, Supervision]]:
    async with (
        local_world(quiet_pair.carrier) as world,
        rig(quiet_pair.pbx, world, tmp_path / "switchboard.db") as r,
    ):
        yield r, r.live.supervision


async def sam(r: Rig) -> Supervisor:
    async with r.store.transaction() as tx:
        row: Agent = await tx.agents.get(r.supervisor_id)
    return Supervisor(row.id, row.login, row.sip_user)


def heard(probe: RtpProbe, after: float) -> dict[str, int]:
    """How many 20 ms packets after `after` carried each party's tone."""
    counts: dict[str, int] = {}
    for packet in probe.received:
        if packet.at < after:
            continue
        samples = ulaw_decode(packet.payload)
        for who in present(samples[:FRAME]):
            counts[who] = counts.get(who, 0) + 1
    return counts


async def with_agent(r: Rig) -> PlacedCall:
    placed = await r.place_call()
    handoff_id = await r.control.request_handoff(placed.call_id, reason="caller_asked",
                                                 summary="x")
    await r.control.accept(handoff_id, r.agent_id)
    await asyncio.wait_for(r.control.calls[placed.call_id].answered.wait(), 5)
    await r.wait_hears(placed, "agent")
    return placed


async def end(r: Rig, placed: PlacedCall) -> None:
    await r.hang_up_caller(placed)
    await until(lambda: placed.call_id not in r.control.calls, 10, why="the call never ended")


async def audit_actions(r: Rig) -> list[str]:
    async with r.store.transaction() as tx:
        return [e.action for e in await tx.audit.recent()]


async def test_listening_supervisor_hears_caller_and_agent_and_nobody_hears_them(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    placed = await with_agent(r)
    await supervision.supervise(placed.call_id, await sam(r), Mode.LISTEN)
    started = time.monotonic()
    await asyncio.sleep(1.5)  # what each side hears meanwhile is checked below

    [probe] = r.world.supervisor_probes
    got = heard(probe, started)
    assert got.get("caller", 0) > 20 and got.get("agent", 0) > 20, got
    # Listening is silent: neither the caller nor the agent hears the supervisor.
    assert await r.world.first_heard(placed.caller, "supervisor", started) is None
    assert all(heard(p, started).get("supervisor", 0) == 0 for p in r.world.agent_probes)
    assert "listen" in await audit_actions(r)
    await end(r, placed)
    assert not supervision.sessions  # the call's end ends the supervision


async def test_a_reconciliation_keeps_the_supervisor_listening(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    # After a lost event socket the controller reconciles with Asterisk: the supervisor's
    # leg, snoop and bridge are in use, not leftovers to hang up.
    r, supervision = sup_rig
    placed = await with_agent(r)
    await supervision.supervise(placed.call_id, await sam(r), Mode.LISTEN)
    await r.control.reconcile()
    started = time.monotonic()
    await asyncio.sleep(1.0)  # what each side hears meanwhile is checked below
    [probe] = r.world.supervisor_probes
    got = heard(probe, started)
    assert got.get("caller", 0) > 20 and got.get("agent", 0) > 20, got
    assert len(supervision.sessions) == 1
    assert await boards_show(r) == [(placed.call_id, "listen")]
    await end(r, placed)
    assert not supervision.sessions

    async def forgotten() -> bool:  # its end takes it off the store, a moment later
        async with r.store.engine.connect() as connection:
            return not (await connection.execute(select(SupervisionRecord))).all()

    await until(forgotten, 10, why="the ended session stayed in the store")


async def test_a_restarted_controller_takes_its_last_runs_sessions_off_the_boards(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    """The sessions were the last process's (their legs are hung up as leftovers): the
    store's record of them goes at the reconciliation, so no board says Sam listens."""
    r, supervision = sup_rig
    placed = await with_agent(r)
    await supervision.supervise(placed.call_id, await sam(r), Mode.LISTEN)
    assert await boards_show(r) == [(placed.call_id, "listen")]
    supervision.sessions.clear()  # what a new process knows of them
    await r.control.reconcile()
    assert await boards_show(r) == []
    await end(r, placed)


async def boards_show(r: Rig) -> list[tuple[str, str | None]]:
    """Sam's sessions as every node's board reads them (the store)."""
    async with r.store.transaction() as tx:
        return [(s.call_id, s.mode) for s in await tx.supervisions.of_supervisor(
            r.supervisor_id)]


async def test_listening_to_an_ai_call_hears_the_caller_and_the_ai(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    placed = await r.place_call()
    await supervision.supervise(placed.call_id, await sam(r), Mode.LISTEN)
    started = time.monotonic()
    await asyncio.sleep(1.5)  # what each side hears meanwhile is checked below
    got = heard(r.world.supervisor_probes[0], started)
    assert got.get("caller", 0) > 20 and got.get("ai", 0) > 20, got
    await end(r, placed)


async def test_whisper_reaches_the_agent_but_not_the_caller(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    placed = await with_agent(r)
    await supervision.supervise(placed.call_id, await sam(r), Mode.WHISPER)
    started = time.monotonic()
    await asyncio.sleep(1.5)  # what each side hears meanwhile is checked below

    [ada] = r.world.agent_probes
    assert heard(ada, started).get("supervisor", 0) > 20
    assert await r.world.first_heard(placed.caller, "supervisor", started) is None
    # The whispering supervisor still hears both sides.
    got = heard(r.world.supervisor_probes[0], started)
    assert got.get("caller", 0) > 20 and got.get("agent", 0) > 20, got
    assert "whisper" in await audit_actions(r)
    await end(r, placed)


async def test_whisper_on_an_ai_call_is_refused_with_a_reason(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    placed = await r.place_call()
    with pytest.raises(SupervisionRefused) as refused:
        await supervision.supervise(placed.call_id, await sam(r), Mode.WHISPER)
    assert refused.value.error == "no_agent"
    assert not r.world.supervisor_probes  # Sam's phone never rang
    await end(r, placed)


async def test_barge_after_listen_puts_the_supervisor_on_the_call_for_everyone(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    placed = await with_agent(r)
    supervisor = await sam(r)
    await supervision.supervise(placed.call_id, supervisor, Mode.LISTEN)
    await supervision.supervise(placed.call_id, supervisor, Mode.BARGE)  # same phone call
    started = time.monotonic()
    await asyncio.sleep(1.5)  # what each side hears meanwhile is checked below

    assert len(r.world.supervisor_probes) == 1  # the phone was not rung again
    assert await r.world.first_heard(placed.caller, "supervisor", started) is not None
    assert heard(r.world.agent_probes[0], started).get("supervisor", 0) > 20
    got = heard(r.world.supervisor_probes[0], started)
    assert got.get("caller", 0) > 20 and got.get("agent", 0) > 20, got
    assert {"listen", "barge"} <= set(await audit_actions(r))
    await end(r, placed)


async def test_take_over_replaces_the_agent_and_the_ledger_names_the_supervisor(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    placed = await with_agent(r)
    first_handoff = r.control.calls[placed.call_id].handoff_id
    await supervision.supervise(placed.call_id, await sam(r), Mode.TAKE_OVER)
    started = time.monotonic()
    await r.wait_hears(placed, "supervisor", after=started)
    await asyncio.sleep(0.6)  # what each side hears meanwhile is checked below
    # Ada's leg is gone: from now on the caller hears only Sam.
    assert await r.world.first_heard(placed.caller, "agent", started + 0.4) is None
    assert heard(r.world.supervisor_probes[0], started).get("caller", 0) > 10

    live = r.control.calls[placed.call_id]
    assert live.agent_id == r.supervisor_id and live.ai is None
    async with r.store.transaction() as tx:
        call = await tx.calls.get(placed.call_id)
        handoffs = await tx.handoffs.for_call(placed.call_id)
    assert call.state is CallState.WITH_AGENT and call.agent_channel_id == live.agent
    by_id = {h.id: h for h in handoffs}
    assert first_handoff is not None and by_id[first_handoff].state is HandoffState.COMPLETED
    mine = by_id[live.handoff_id or -1]
    assert mine.reason == "supervisor" and mine.accepted_by == r.supervisor_id
    assert mine.state is HandoffState.CONNECTED
    assert "take_over" in await audit_actions(r)

    await end(r, placed)
    async with r.store.transaction() as tx:
        assert (await tx.calls.get(placed.call_id)).outcome is CallOutcome.COMPLETED_BY_AGENT

    async def lines() -> set[tuple[str, int | None]] | None:
        async with r.store.transaction() as tx:
            rows = await tx.quality.for_call(placed.call_id)
        return {(row.leg, row.handoff_id) for row in rows} if len(rows) == 3 else None

    # The agent's line and then the supervisor's, each under its own handoff.
    assert await until(lines) == {("caller", None), ("agent", first_handoff), ("agent", mine.id)}


async def test_take_over_of_an_ai_call_moves_the_caller_from_the_ai_to_the_supervisor(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    await supervision.supervise(placed.call_id, await sam(r), Mode.TAKE_OVER)
    started = time.monotonic()
    heard_sam = await r.wait_hears(placed, "supervisor", after=started)
    await asyncio.sleep(0.6)  # what each side hears meanwhile is checked below
    assert await r.world.first_heard(placed.caller, "ai", heard_sam + 0.3) is None
    assert await r.gap_ms(placed, started - 0.3, heard_sam + 0.3) < 150
    async with r.store.transaction() as tx:
        assert (await tx.calls.get(placed.call_id)).state is CallState.WITH_AGENT
    await end(r, placed)


async def test_a_supervisor_on_a_call_is_refused_a_take_over_before_the_phone_rings(
    sup_rig: tuple[Rig, Supervision],
) -> None:
    r, supervision = sup_rig
    mine = await r.place_call()
    await supervision.supervise(mine.call_id, await sam(r), Mode.TAKE_OVER)
    await r.wait_hears(mine, "supervisor")
    other = await r.place_call()
    with pytest.raises(SupervisionRefused) as refused:
        await supervision.supervise(other.call_id, await sam(r), Mode.TAKE_OVER)
    assert refused.value.error == "busy"
    assert len(r.world.supervisor_probes) == 1  # Sam's phone rang for his own call only
    async with r.store.transaction() as tx:
        assert (await tx.calls.get(other.call_id)).state is CallState.WITH_AI
    await end(r, mine)
    await end(r, other)


async def test_an_audit_line_that_cannot_be_written_at_the_end_of_supervision_is_logged(
    sup_rig: tuple[Rig, Supervision], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    r, supervision = sup_rig
    placed = await with_agent(r)
    supervisor = await sam(r)
    await supervision.supervise(placed.call_id, supervisor, Mode.LISTEN)

    async def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("the database refused the write")

    monkeypatch.setattr(AuditRepo, "record", refuse)
    with caplog.at_level(logging.ERROR, logger="handoff.supervision"):
        await supervision.stop(placed.call_id, supervisor)
    assert "could not be written to the audit log" in caplog.text
    assert not supervision.of_call(placed.call_id)  # the session ended all the same
    monkeypatch.undo()
    await end(r, placed)
