"""`switchboard bench capacity`: how many recorded AI calls one box carries.

Concurrent calls ramp up in steps (25, 50, 100, 150, 200, ... or ``--steps``) on a real
PBX and a carrier Asterisk: each caller is answered, recorded as the product records, and
talks to an AI over AudioSocket. The AI engine and the callers' phones (the World) run in
a child process, so neither their CPU nor their signal processing is counted as the
controller's. Once a step's calls are all up, each step is held for a window and reports:

- CPU in % of one core, from each process's own utime+stime in /proc (meaningful on a
  busy machine, unlike wall-clock figures): the product's Asterisk (and per call), the
  controller (this process), the rig (carrier Asterisk and the World's process, also
  each apart);
- the controller's event-loop lag p99 (a 10 ms timer's overshoot);
- the callers' AI stream: packets lost (of 50 a second) and late (over 40 ms after the
  one before), and how much of it was the AI's voice; and how far short of 50 a second
  the PBX's own count of packets sent to its callers fell (so a loss is placed on the
  PBX's side of the trunk or on the rig's);
- answer time (from the call placed to the caller hearing the AI) and its p50/p99;
- dropped calls (ended before the benchmark hung them up) and silent ones (that never
  heard the AI, or heard it in under half the window);
- the controller's memory per 100 calls (its RSS growth since before the first call).

It stops at the knee: the first step with a dropped or silent call or a loop lag p99
over 50 ms (or at ``--max``). Handoffs during the ramp are not run yet.

``--recording`` measures where the PBX's cost goes, by changing each call from outside
once it is up: ``bridge`` as the product records (a recorder in the call's bridge, so a
three-member softmix bridge), ``none`` (the recorder stopped: a two-party bridge),
``mixmonitor`` (MixMonitor on the caller's channel, from the console, instead of the recorder),
``snoop`` (an ARI snoop on the caller, spy both, recorded, instead of the recorder) and
``legs`` (two snoops, each recording one party's own voice: the caller's and the AI's).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbx import runtime
from pbx.ari import AriClient, AriConflict, AriError
from pbx.ari.resources import Direction
from web.bench.handoff import summary
from web.bench.rig import PlacedCall, Rig, asterisk_pair, rig
from web.bench.world_process import RemoteWorld

RECORDINGS = ("bridge", "none", "mixmonitor", "snoop", "legs")
DEFAULT_STEPS = (25, 50, 100, 150, 200, 300, 400)
KNEE_LOOP_LAG_MS = 50.0
FRAMES_PER_S = 50  # 20 ms packets
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime+stime of a process and its threads, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class LoopLag:
    """How late a 10 ms timer fires on this event loop: the controller's own delay in
    handling anything (an ARI event, a dashboard request) while the calls run."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period)
            self.samples.append(max(0.0, time.monotonic() - before - self.period) * 1000)

    def take(self) -> list[float]:
        taken, self.samples = self.samples, []
        return taken

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Calls:
    up: list[PlacedCall] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    silent: int = 0  # never heard the AI


async def record_as(ramp: Ramp, call_id: str) -> None:
    """Swap the product's bridge recorder of a call that is up for ``ramp.recording``."""
    if ramp.recording == "bridge":
        return
    live = ramp.r.control.calls[call_id]
    ari = ramp.r.pbx_ari
    await ari.recordings.stop(live.recording or "")
    if ramp.recording == "mixmonitor":
        # The console, not AMI: the product's AMI account may not start MixMonitor.
        name = (await ari.channels.get(live.caller))["name"]
        await ramp.r.pbx.cli(f"mixmonitor start {name} bench-{call_id}.wav")
    elif ramp.recording == "snoop":
        await record_snoop(ari, live.caller, "both", f"bench-{call_id}")
    elif ramp.recording == "legs":
        # Each party's own voice, from its own channel: what the caller says and what
        # the AI says, to be mixed after the call. One source per recorded direction, so
        # the audiohook's translator never sees two RTP streams (see record_snoop).
        await record_snoop(ari, live.caller, "in", f"bench-{call_id}-caller")
        if live.ai is not None:
            await record_snoop(ari, live.ai, "in", f"bench-{call_id}-ai")


async def record_snoop(ari: AriClient, leg: str, spy: Direction, name: str) -> None:
    """Record a snoop on ``leg`` (``spy``: in, out or both) as ``name``.

    What the caller hears ("out", and so "both") is not recorded reliably on Debian's
    Asterisk 22.10.1: every party's frames written to the caller pass one translator of
    the caller's audiohooks (G.711 to linear), and that build's translator drops a frame
    whose sequence number is not ahead of the last one it took. After a handoff the
    agent's RTP stream starts at a random number, behind the mixer's frames (numbered 0)
    in half the calls, and then none of the agent reaches any snoop or MixMonitor on the
    caller. A leg's own voice ("in") is one stream, so it is recorded whole.
    """
    snoop = await ari.channels.snoop(leg, "switchboard", spy=spy, app_args=["bench"])
    # The snoop leg enters Stasis a moment after the reply; until then ARI says 409.
    for _ in range(100):
        try:
            await ari.channels.record(snoop["id"], name)
            return
        except AriConflict:
            await asyncio.sleep(0.02)
    raise TimeoutError(f"snoop on {leg} never entered Stasis")


async def place(ramp: Ramp, count: int, at_once: int = 10) -> None:
    """``count`` more callers, ``at_once`` arriving together, each until it hears the AI."""
    r, calls = ramp.r, ramp.calls
    gate = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with gate:
            placed_at = time.monotonic()
            placed = await r.place_call(wait_ai=False)
        try:
            heard = await r.wait_hears(placed, "ai", after=placed_at, timeout=15)
        except TimeoutError:
            calls.silent += 1
            return
        calls.answer_ms.append((heard - placed_at) * 1000)
        placed.call_id = next((c.call_id for c in r.control.calls.values()
                               if c.caller_number == placed.caller), "")
        await record_as(ramp, placed.call_id)
        calls.up.append(placed)

    await asyncio.gather(*(one() for _ in range(count)))


@dataclass
class Ramp:
    """One run's rig, the processes whose CPU is counted (by role), and its calls."""

    r: Rig
    world: RemoteWorld
    pids: dict[str, list[int]]
    window_s: float
    recording: str = "bridge"
    calls: Calls = field(default_factory=Calls)
    lag: LoopLag = field(default_factory=LoopLag)
    rss_before: int = field(default_factory=lambda: rss_kib(os.getpid()))


async def pbx_sent(r: Rig, up: list[PlacedCall]) -> list[int]:
    """How many RTP packets the PBX has sent each caller so far (its txcount)."""
    counts = []
    for placed in up:
        live = r.control.calls.get(placed.call_id)
        try:
            stats = await r.pbx_ari.channels.rtp_statistics(live.caller) if live else {}
        except AriError:
            stats = {}
        counts.append(int(stats.get("txcount") or 0))
    return counts


async def step(ramp: Ramp, target: int) -> dict[str, Any]:
    r, world, pids, calls, lag = ramp.r, ramp.world, ramp.pids, ramp.calls, ramp.lag
    answers_before, silent_before = len(calls.answer_ms), calls.silent
    await place(ramp, target - len(calls.up) - calls.silent)
    sent_before = await pbx_sent(r, calls.up)
    ticks = {who: sum(cpu_ticks(p) for p in group) for who, group in pids.items()}
    lag.take()
    start = time.monotonic()
    await asyncio.sleep(ramp.window_s)  # the measured window: calls talking, nothing else
    end = time.monotonic()
    sent = sum(await pbx_sent(r, calls.up)) - sum(sent_before)
    cpu = {who: round((sum(cpu_ticks(p) for p in group) - ticks[who]) / TICK
                      / (end - start) * 100, 1) for who, group in pids.items()}
    lags = lag.take()
    packets = late = weak = sampled = ai_sampled = 0
    expected = round((end - start) * FRAMES_PER_S)
    for placed in calls.up:
        stats = await world.stream_stats(placed.caller, start, end)
        packets += stats["packets"]
        late += stats["late"]
        sampled += stats["sampled"]
        ai_sampled += stats["ai_sampled"]
        if stats["ai_sampled"] * 2 < stats["sampled"] or stats["packets"] * 2 < expected:
            weak += 1
    dropped = sum(1 for placed in calls.up if placed.call_id not in r.control.calls)
    n = len(calls.up)
    lag_p99 = summary(lags)["p99"] or 0.0
    return {
        "calls": target,
        "up": n,
        "cpu_pct_of_core": {**cpu, "pbx_per_call": round(cpu["pbx"] / max(n, 1), 2)},
        "loop_lag_ms": summary(lags),
        "ai_packets_lost": max(0, expected * n - packets),
        # Where the loss is: the packets the PBX sent its callers in the window (its own
        # RTP counters), against the FRAMES_PER_S a call that the callers' phones expect.
        "pbx_packets_sent_short": max(0, expected * n - sent),
        "ai_packets_late": late,
        "ai_voice_share": round(ai_sampled / sampled, 3) if sampled else None,
        "answer_ms": summary(calls.answer_ms[answers_before:]),
        "dropped_calls": dropped,
        "silent_calls": calls.silent - silent_before + weak,
        "controller_mib_per_100_calls": round(
            (rss_kib(os.getpid()) - ramp.rss_before) / 1024 / max(n, 1) * 100, 1),
        "knee": bool(dropped or calls.silent - silent_before or weak
                     or lag_p99 > KNEE_LOOP_LAG_MS),
    }


async def run(steps: list[int], window_s: float, recording: str,
              state_dir: Path) -> dict[str, Any]:
    installation = await asyncio.to_thread(runtime.locate)
    most = max(steps)
    # The carrier holds two channels a caller (the call and its phone's RTP probe).
    async with asterisk_pair(installation, state_dir, f"capacity{os.getpid()}",
                             max_calls=2 * most + 20) as pair:
        world = await RemoteWorld.start(pair.carrier.ari_url, *pair.carrier.ari_auth)
        results: list[dict[str, Any]] = []
        try:
            async with rig(pair.pbx, world, state_dir / "bench.db") as r:
                # The rig apart too: the carrier's Asterisk, and the World's one process
                # (phones' probes and the AI engine), which may be what runs out first.
                ramp = Ramp(r, world, {"pbx": [pair.pbx.pid or 0],
                                       "controller": [os.getpid()],
                                       "rig": [pair.carrier.pid or 0, world.pid],
                                       "rig_carrier": [pair.carrier.pid or 0],
                                       "rig_world": [world.pid]}, window_s, recording)
                ramp.lag.start()
                try:
                    for target in steps:
                        results.append(await step(ramp, target))
                        if results[-1]["knee"]:
                            break
                finally:
                    await ramp.lag.stop()
                    await hang_up_all(r, ramp.calls)
        finally:
            await world.close()
    knee = next((s["calls"] for s in results if s["knee"]), None)
    return {"benchmark": "capacity", "asterisk": installation.version,
            "cores": os.cpu_count(), "window_s": window_s, "recording": recording,
            "knee_calls": knee, "steps": results}


async def hang_up_all(r: Rig, calls: Calls) -> None:
    for placed in calls.up:
        if placed.call_id in r.control.calls:
            await r.hang_up_caller(placed)
    deadline = time.monotonic() + 60
    while r.control.calls and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def main(steps: list[int] | None, most: int | None, window_s: float, recording: str,
         as_json: bool) -> int:
    chosen = [s for s in (steps or DEFAULT_STEPS) if most is None or s <= most]
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        result = asyncio.run(run(chosen, window_s, recording, Path(tmp)))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        for s in result["steps"]:
            print(json.dumps(s))
        print(f"knee: {result['knee_calls'] or 'not reached'}")
    return 0
