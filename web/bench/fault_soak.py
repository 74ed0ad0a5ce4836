"""`switchboard bench faults`: calls and handoffs for N minutes while things break.

On a real PBX and carrier Asterisk (web.bench.rig), callers arrive every couple of
seconds and talk to the AI; half of them ask for a person, whom Ada's desk phone on the
carrier answers; each hangs up after a while. Meanwhile, one at a time and at random
moments, a fault (web.bench.faults):

- ``asterisk_restart``: ``core restart now`` on the PBX with calls up;
- ``asterisk_pause``: the PBX frozen (SIGSTOP) for a few seconds, less than its media
  timeout: every socket open, nothing answered;
- ``controller_kill``: the controller gone without a word (its event socket cut, its
  memory dropped, nothing hung up), and a new one on the same store adopting what
  Asterisk still has. (The product's own process killed with -9 is R6's test.)
- ``event_socket_cut``: the controller's ARI connection cut, as when a proxy dies;
- ``agent_phone_vanish``: a caller is handed to Bea, whose real SIP desk phone
  (web.bench.sip_phone) then goes silent while she talks, with no BYE (its power or
  network gone): the PBX notices by its media timeout (30 s for a desk phone) and gives
  the caller back to the AI.

Reported: calls placed; calls with an outcome in the ledger (the target is all; a call
the PBX refused while it restarted has no row and is counted apart); calls whose caller
heard silence longer than 2 s, and how many of those overlapped a fault; what was left
(channels and bridges on either Asterisk, open call rows, this process's descriptors,
threads and tasks); per fault kind, the recovery time: from the fault's end until a new
caller is heard by the AI (for a vanished agent phone: until its caller hears the AI
again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.agents import Presence
from handoff.store import AgentBusy, create_store_engine
from handoff.store.models import Call
from pbx import runtime
from pbx.ari import AriError
from web.bench.faults import Baseline, TcpPath, ari_get, paused, restart_in_place
from web.bench.handoff import monotonic_of, summary
from web.bench.rig import Bea, Pair, Rig, asterisk_pair, bea_at_her_desk, rig
from web.bench.waiting import until
from web.bench.world import World, local_world

FAULT_KINDS = ("asterisk_restart", "asterisk_pause", "controller_kill", "event_socket_cut",
               "agent_phone_vanish")
SILENCE_MS = 2000.0  # longer than this, a caller takes the line for dead
PAUSE_S = 3.0  # the frozen PBX: well under the 30 s media timeout of the caller's leg
CALL_EVERY_S = 2.0
TALK_S = (4.0, 12.0)
FAULT_EVERY_S = (20.0, 40.0)
RECOVERY_BOUND_S = 60.0
PROBE_S = 5.0  # a recovery probe's caller gives up on hearing the AI after this


@dataclass
class CallRecord:
    caller: str = ""
    placed_at: float = 0.0
    heard_ai_at: float | None = None
    handoff: str = ""  # "", "connected", or why not
    error: str = ""
    hung_up_at: float | None = None


@dataclass
class FaultRecord:
    kind: str
    started: float
    ended: float
    recovery_s: float | None = None
    error: str = ""


@dataclass
class Soak:
    pair: Pair
    world: World
    db: Path
    rng: random.Random
    calls: list[CallRecord] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    _rig: Rig | None = None
    _path: TcpPath | None = None
    _stack: contextlib.AsyncExitStack | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _engine: AsyncEngine | None = None
    bea: Bea | None = None  # the agent whose desk phone vanishes
    _stores: list[AsyncEngine] = field(default_factory=list)  # each controller's

    # ---- the controller, which a fault may kill ------------------------------------------

    async def start_controller(self) -> None:
        stack = contextlib.AsyncExitStack()
        path = await stack.enter_async_context(TcpPath(self.pair.pbx.spec.ports.http))
        self._rig = await stack.enter_async_context(rig(
            self.pair.pbx, self.world, self.db, check_ledger=False, ari_url=path.url()))
        self._stack, self._path = stack, path
        self._stores.append(self._rig.store.engine)

    async def stop_controller(self) -> None:
        stack, self._stack, self._rig = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # ---- callers ---------------------------------------------------------------------------

    async def call(self, hold: bool = True, within: float = 15) -> CallRecord:
        record = CallRecord(placed_at=time.monotonic())
        self.calls.append(record)
        try:
            record.caller = await self.world.place_call("2000")
            record.heard_ai_at = await until(
                lambda: self.world.first_heard(record.caller, "ai", record.placed_at),
                within=within, step=0.05)
        except (AriError, AssertionError) as exc:
            record.error = f"never heard the AI: {exc}"[:120]
            if record.caller:  # a caller who hears nothing hangs up
                await self.hang_up(record)
            return record
        if hold and self.rng.random() < 0.5:
            record.handoff = await self._hand_over(record.caller)
        if hold:
            await asyncio.sleep(self.rng.uniform(*TALK_S))  # the caller talks a while
            await self.hang_up(record)
        return record

    async def hang_up(self, record: CallRecord) -> None:
        record.hung_up_at = time.monotonic()
        with contextlib.suppress(AriError):  # gone already (a restart ended it)
            await self.world.hang_up(record.caller)

    async def _hand_over(self, caller: str, patience: float = 0.0,
                         agent_id: int | None = None) -> str:
        """The caller asks for a person and the agent (Ada unless named) accepts, trying
        for ``patience`` seconds while she is busy with another caller."""
        r = self._rig
        if r is None:
            return "no controller"
        agent_id = r.agent_id if agent_id is None else agent_id
        try:
            call_id = await self._call_id(caller)
            handoff_id = await r.control.request_handoff(call_id, reason="caller_asked",
                                                         summary="fault soak")
            give_up = time.monotonic() + patience
            while True:
                try:
                    await r.control.accept(handoff_id, agent_id)
                    return "connected"
                except AgentBusy:
                    if time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(0.5)  # her current call or wrap-up ends
        except Exception as exc:  # busy agent, call gone, controller restarting: counted
            return type(exc).__name__

    async def _call_id(self, caller: str) -> str:
        rows = await self._rows(caller)
        if not rows:
            raise LookupError(f"no call row for {caller}")
        return str(rows[0].id)

    async def _rows(self, caller: str) -> list[Any]:
        """The ledger's rows for a caller (id, outcome, ended_at), read on an engine of
        the soak's own: the controller's comes and goes with the faults."""
        if self._engine is None:
            self._engine = create_store_engine(f"sqlite:///{self.db}")
        async with self._engine.connect() as connection:
            result = await connection.execute(
                select(Call.id, Call.outcome, Call.ended_at).where(Call.caller_number == caller))
            return list(result)

    async def close(self) -> None:
        await self.stop_controller()
        # A caller's request that was under way when its controller was killed may
        # have opened a connection on that controller's engine after the kill: in a
        # real kill -9 it goes with the process, here it is closed now.
        for engine in [*self._stores, *([self._engine] if self._engine else [])]:
            await engine.dispose()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def traffic(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._spawn(self.call())
            await asyncio.sleep(CALL_EVERY_S)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- faults ----------------------------------------------------------------------------

    async def fault_loop(self, deadline: float) -> None:
        kinds: list[str] = []
        while time.monotonic() + FAULT_EVERY_S[1] < deadline:
            await asyncio.sleep(self.rng.uniform(*FAULT_EVERY_S))
            if not kinds:
                kinds = self.rng.sample(FAULT_KINDS, len(FAULT_KINDS))
            await self.inject(kinds.pop())

    async def inject(self, kind: str) -> FaultRecord:
        record = FaultRecord(kind, time.monotonic(), 0.0)
        self.faults.append(record)
        dropped: CallRecord | None = None
        try:
            if kind == "asterisk_restart":
                await restart_in_place(self.pair.pbx)
            elif kind == "asterisk_pause":
                async with paused(self.pair.pbx):
                    await asyncio.sleep(PAUSE_S)  # the fault's length is the case
            elif kind == "controller_kill":
                assert self._path is not None
                await self._path.cut()
                await self.stop_controller()
                await self.start_controller()
            elif kind == "event_socket_cut":
                assert self._path is not None
                await self._path.cut()
            elif kind == "agent_phone_vanish":
                dropped = await self._agent_phone_vanishes()
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:160]
        record.ended = time.monotonic()
        record.recovery_s = await self._recovery(record, dropped)
        return record

    async def _agent_phone_vanishes(self) -> CallRecord:
        """A caller handed to Bea, whose real desk phone then goes silent mid-call: no
        more RTP, no BYE, as when its power or network goes."""
        assert self.bea is not None and self._rig is not None
        with contextlib.suppress(Exception):  # back at her desk after the last time
            async with self._rig.store.transaction() as tx:
                await tx.agents.set_presence(self.bea.agent_id, Presence.AVAILABLE)
        record = await self.call(hold=False)
        try:
            record.handoff = await self._hand_over(record.caller, patience=30,
                                                   agent_id=self.bea.agent_id)
            if record.handoff != "connected":
                raise RuntimeError(f"no call reached the agent ({record.handoff})")
            dialog = await self.bea.phone.wait_call(10)
            # She talks: her phone answered and the AI has left the call.
            live = self._rig.control.calls[await self._call_id(record.caller)]
            await asyncio.wait_for(self._rig.control.settled(live), 10)
            self.bea.phone.stop_media(dialog)
        except BaseException:
            self._spawn(self._finish(record))  # the caller still hangs up in the end
            raise
        return record

    async def _recovery(self, fault: FaultRecord, dropped: CallRecord | None) -> float | None:
        try:
            if dropped is not None:  # the caller is given back to the AI
                try:
                    recovered = await until(
                        lambda: self.world.first_heard(dropped.caller, "ai", fault.ended),
                        within=RECOVERY_BOUND_S, step=0.05)
                finally:
                    self._spawn(self._finish(dropped))
            else:  # a new caller reaches the AI: tried once the controller's link is up
                # again, and again every few seconds until one does
                deadline = fault.ended + RECOVERY_BOUND_S
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    await until(self._serving, within=left, step=0.05)
                    probe = await self.call(hold=False, within=PROBE_S)
                    self._spawn(self._finish(probe))
                    if probe.heard_ai_at is not None:
                        recovered = probe.heard_ai_at
                        break
        except AssertionError:
            return None
        return round(recovered - fault.ended, 2)

    def _serving(self) -> bool:
        return self._rig is not None and self._rig.pbx_ari.status == "connected"

    async def _finish(self, record: CallRecord) -> None:
        await asyncio.sleep(self.rng.uniform(*TALK_S))
        await self.hang_up(record)

    # ---- what is left ----------------------------------------------------------------------

    async def outcomes(self) -> tuple[Counter[str], list[str], list[str]]:
        """(outcome counts, callers whose row is still open, callers with no row)."""
        counts: Counter[str] = Counter()
        open_rows: list[str] = []
        no_row: list[str] = []
        for record in self.calls:
            if not record.caller:
                continue
            rows = await self._rows(record.caller)
            if not rows:
                no_row.append(record.caller)
            for row in rows:
                if row.outcome is None:
                    open_rows.append(record.caller)
                else:
                    counts[str(row.outcome)] += 1
        return counts, open_rows, no_row

    async def silences(self) -> tuple[int, int]:
        """Calls whose caller heard more than SILENCE_MS of silence while their call was
        up, and how many of those overlapped a fault."""
        silent = during_fault = 0
        for record in self.calls:
            if record.heard_ai_at is None:
                continue
            rows = await self._rows(record.caller)
            if not rows or rows[0].ended_at is None:
                continue
            # Until the call ended, by the caller or by the PBX: a caller cut off by a
            # restart hears their line go, not dead air. A silence running to that end
            # counts (an AI that went quiet for good), one before the AI was heard not.
            ended_at = rows[0].ended_at
            if ended_at.tzinfo is None:  # stored as UTC without its zone
                ended_at = ended_at.replace(tzinfo=UTC)
            ended = min(monotonic_of(ended_at.timestamp()),
                        record.hung_up_at or float("inf")) - 0.1
            frames = await self.world.frames(record.caller, record.heard_ai_at, ended)
            points = [record.heard_ai_at, *(at for at, who in frames if who != "-"), ended]
            gap = max(b - a for a, b in itertools.pairwise(points)) * 1000
            if gap > SILENCE_MS:
                silent += 1
                if any(f.started <= ended and f.ended + 1 >= record.heard_ai_at
                       for f in self.faults):
                    during_fault += 1
        return silent, during_fault


async def leftovers(pair: Pair) -> dict[str, list[str]]:
    """Channels and bridges either Asterisk still has."""
    left: dict[str, list[str]] = {}
    for name, instance in (("pbx", pair.pbx), ("carrier", pair.carrier)):
        _, channels = await ari_get(instance, "/channels")
        _, bridges = await ari_get(instance, "/bridges")
        left[name] = ([c["name"] for c in channels or []]
                      + [f"bridge {b['id']}" for b in bridges or []])
    return left


def report(minutes: float, calls: list[CallRecord], faults: list[FaultRecord], *,
           outcomes: Counter[str], open_rows: list[str], no_row: list[str],
           silent: tuple[int, int], leaks: dict[str, list[str]]) -> dict[str, Any]:
    placed = [c for c in calls if c.caller]
    return {
        "benchmark": "faults",
        "minutes": minutes,
        "calls_placed": len(placed),
        # The carrier could not even start the call (its originate refused): not placed.
        "calls_not_placed": len(calls) - len(placed),
        "calls_with_outcome": sum(outcomes.values()),
        "calls_refused_while_pbx_restarted": len(no_row),
        "calls_left_open": open_rows,
        "outcomes": dict(sorted(outcomes.items())),
        "calls_never_heard_ai": sum(1 for c in placed if c.heard_ai_at is None),
        "handoffs": dict(Counter(c.handoff for c in placed if c.handoff)),
        "calls_heard_silence_over_2s": silent[0],
        "of_which_overlapping_a_fault": silent[1],
        "leaks": leaks,
        "faults": {
            kind: {
                "count": sum(1 for f in faults if f.kind == kind),
                "recovery_s": summary([f.recovery_s for f in faults
                                       if f.kind == kind and f.recovery_s is not None]),
                "not_recovered": sum(1 for f in faults
                                     if f.kind == kind and f.recovery_s is None),
                "errors": [f.error for f in faults if f.kind == kind and f.error],
            }
            for kind in FAULT_KINDS
        },
    }


async def run(minutes: float, state_dir: Path, seed: int) -> dict[str, Any]:
    installation = await asyncio.to_thread(runtime.locate)
    async with asterisk_pair(installation, state_dir, f"soak{os.getpid()}") as pair:
        before = Baseline.now()
        async with local_world(pair.carrier) as world:
            soak = Soak(pair, world, state_dir / "soak.db", random.Random(seed))
            await soak.start_controller()
            seated = contextlib.AsyncExitStack()
            try:
                assert soak._rig is not None
                # Bea's phone outlives the controllers the faults kill: it is hers.
                soak.bea = await seated.enter_async_context(
                    bea_at_her_desk(soak._rig, alone=False))
                deadline = time.monotonic() + minutes * 60
                await asyncio.gather(soak.traffic(deadline), soak.fault_loop(deadline))
                await asyncio.gather(*soak._tasks, return_exceptions=True)

                async def settled() -> bool:
                    left = await leftovers(pair)
                    _, still_open, _ = await soak.outcomes()
                    return not any(left.values()) and not still_open

                with contextlib.suppress(AssertionError):
                    await until(settled, within=60, step=1)
                leaks = await leftovers(pair)
                outcomes, open_rows, no_row = await soak.outcomes()
                silent = await soak.silences()
            finally:
                await seated.aclose()
                await soak.close()
            for record in soak.calls:
                if record.caller:
                    await world.forget(record.caller)
        process: list[str] = []

        def back() -> bool:
            nonlocal process
            process = Baseline.now().leaks_since(before)
            return not process

        with contextlib.suppress(AssertionError):
            await until(back, within=15, step=0.2)
        leaks["process"] = process
    result = report(minutes, soak.calls, soak.faults, outcomes=outcomes, open_rows=open_rows,
                    no_row=no_row, silent=silent, leaks=leaks)
    return {"asterisk": installation.version, "seed": seed, **result}


def main(minutes: float, as_json: bool, seed: int | None = None) -> int:
    seed = random.randrange(1 << 30) if seed is None else seed
    with tempfile.TemporaryDirectory(prefix="switchboard-soak-") as tmp:
        result = asyncio.run(run(minutes, Path(tmp), seed))
    print(json.dumps(result, indent=2) if as_json else
          "\n".join(f"{key}: {value}" for key, value in result.items()))
    return 0 if (result["calls_placed"] == result["calls_with_outcome"]
                 + result["calls_refused_while_pbx_restarted"]
                 and not any(result["leaks"].values())) else 1
