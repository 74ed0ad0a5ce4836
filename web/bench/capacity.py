"""`switchboard bench capacity`: how many recorded AI calls one box carries.

Concurrent calls ramp up in steps (25, 50, 100, 150, 200, ... or ``--steps``) on a real
PBX and a carrier Asterisk: each caller is answered, recorded as the product records, and
talks to an AI over AudioSocket. The AI engine and the callers' phones (the World) run in
child processes of their own, so neither their CPU nor their signal processing is counted
as the controller's. Once a step's calls are all up, each step is held for a window and reports:

- CPU in % of one core, from each process's own utime+stime in /proc (meaningful on a
  busy machine, unlike wall-clock figures): the product's Asterisk (and per call), the
  controller (this process), the rig (the carrier Asterisk, the callers' phones' process
  and the AI engine's, also each apart; the rig's two processes run at nice -10, so
  that on a busy machine their loss is not the product's);
- the controller's event-loop lag p99 (a 10 ms timer's overshoot);
- the callers' AI stream: packets lost (of 50 a second) and late (over 40 ms after the
  one before), the longest gap between two packets, and how much of it was the AI's
  voice (every packet judged, in one NumPy pass per caller);
- where the stream's packets went missing, link by link, so that the product's loss is
  told from the rig's: short of 50 a second in the PBX's own count of packets sent to
  its callers (the product), lost on the trunk (the carrier's count received), lost
  between the carrier and the callers' phones (the rig); the kernel's count of
  datagrams each process did not read in time (its UDP sockets' drops); the callers'
  legs as the PBX saw them (packets lost each way, worst jitter) and the worst jitter
  the carrier saw on the PBX's stream;
- answer time (from the call placed to the caller hearing the AI) and its p50/p99;
- dropped calls (ended before the benchmark hung them up) and silent ones (that never
  heard the AI, or heard a voice, the AI's or an agent's, in under half the window);
- handoffs, ``--handoff-rate`` a second throughout the ramp (web.bench.capacity_handoffs:
  to agents whose desk phones keep an open line, each handed back to the AI after a
  moment): done, failed, and skipped for want of an idle line, the connect time's
  p50/p99 and the longest silence a caller heard across the moves;
- the controller's memory per 100 calls (its RSS growth since before the first call).

It stops at the knee: the first step with a dropped or silent call, a caller's gap over
60 ms (in the stream, or across a handoff's move), or a loop lag p99 over 50 ms (or at
``--max``); the step's ``knee`` says which. ``--chart FILE.svg`` draws the steps as one
SVG picture (the dashboard's chart code).

``--recording`` measures where the PBX's cost goes, by changing each call from outside
once it is up: ``bridge`` as the product records (a recorder in the call's bridge, so a
three-member softmix bridge), ``none`` (the recorder stopped: a two-party bridge),
``mixmonitor`` (MixMonitor on the caller's channel, from the console, instead of the recorder),
``snoop`` (an ARI snoop on the caller, spy both, recorded, instead of the recorder) and
``legs`` (two snoops, each recording one party's own voice: the caller's and the AI's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbx import runtime
from pbx.ari import AriClient, AriConflict, AriError
from pbx.ari.resources import Direction
from web.bench.capacity_chart import chart
from web.bench.capacity_handoffs import Handoffs, desk_phones, move_gap_ms, seat
from web.bench.handoff import summary
from web.bench.rig import PlacedCall, Rig, asterisk_pair, rig
from web.bench.world_process import RemoteWorld

RECORDINGS = ("bridge", "none", "mixmonitor", "snoop", "legs")
DEFAULT_STEPS = (25, 50, 100, 150, 200, 300, 400)
DEFAULT_HANDOFF_RATE = 2.0  # a second, throughout the ramp (issue 14's target load)
KNEE_LOOP_LAG_MS = 50.0
KNEE_GAP_MS = 60.0  # a caller's longest silence between two packets
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
    unheard: list[PlacedCall] = field(default_factory=list)  # placed, never heard the AI


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
        # the audiohook never sees two RTP streams (see record_snoop).
        await record_snoop(ari, live.caller, "in", f"bench-{call_id}-caller")
        if live.ai is not None:
            await record_snoop(ari, live.ai, "in", f"bench-{call_id}-ai")


async def record_snoop(ari: AriClient, leg: str, spy: Direction, name: str) -> None:
    """Record a snoop on ``leg`` (``spy``: in, out or both) as ``name``.

    What the caller hears ("out", and so "both") is not recorded reliably on Debian's
    Asterisk 22.10.1: after a handoff the agent's RTP stream starts at a random sequence
    number, behind the mixer's frames (numbered 0) in half the calls, and then none of the
    agent reaches any snoop or MixMonitor on the caller (observed; where that build
    drops the frames is not pinned down: upstream's translator has no such check). A
    leg's own voice ("in") is one stream, so it is recorded whole.
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
        try:
            async with gate:
                placed_at = time.monotonic()
                # Bounded by the carrier's ARI request timeout (10 s), not cancelled
                # here: a request to the World's process cut off half-way would leave
                # its reply to be read as the next one's.
                placed = await r.place_call(wait_ai=False)
        except RuntimeError:  # the World's originate failed: no call to hang up
            calls.silent += 1
            return
        try:
            heard = await r.wait_hears(placed, "ai", after=placed_at, timeout=15)
        except TimeoutError:
            calls.silent += 1
            calls.unheard.append(placed)  # still up, maybe: hung up with the others
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
    handoffs: Handoffs | None = None
    rss_before: int = field(default_factory=lambda: rss_kib(os.getpid()))


def udp_drops(pids: list[int]) -> int:
    """Datagrams the kernel dropped at these processes' UDP sockets (their receive buffer
    full: the process did not read them in time), from /proc/net/udp's per-socket count."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    dropped = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            dropped += int(fields[-1])
    return dropped


PBX_COUNTERS = ("txcount", "rxcount", "rxploss", "txploss")


async def pbx_counts(r: Rig, up: list[PlacedCall]) -> dict[str, dict[str, float]]:
    """The PBX's own RTP counters on each caller's leg (``txcount``: packets it sent the
    caller; ``rxploss``: the caller's packets it found missing; ``txploss``: its packets
    the carrier reported missing over RTCP; ``rxjitter`` in ms), by caller, each read
    stamped with its instant (``at``: the middle of the request)."""
    read: dict[str, dict[str, float]] = {}
    for placed in up:
        live = r.control.calls.get(placed.call_id)
        asked = time.monotonic()
        try:
            stats = await r.pbx_ari.channels.rtp_statistics(live.caller) if live else {}
        except AriError:
            continue
        at = (asked + time.monotonic()) / 2
        read[placed.caller] = {key: int(stats.get(key) or 0) for key in PBX_COUNTERS}
        # Asterisk reports jitter in seconds.
        read[placed.caller] |= {"rxjitter": float(stats.get("rxjitter") or 0) * 1000,
                                "at": at}
    return read


def over_window(before: Mapping[str, Mapping[str, float]],
                after: Mapping[str, Mapping[str, float]], key: str, window_s: float,
                at: str = "at") -> float:
    """A counter's growth over the window, summed over callers, each caller's counter
    scaled from the interval between its own two reads to the window: the reads of a
    hundred legs take a while, and another process's reads of the next link another."""
    total = 0.0
    for caller, end in after.items():
        start = before.get(caller)
        if start is not None and end[at] > start[at]:
            total += (end[key] - start[key]) * window_s / (end[at] - start[at])
    return total


Counts = tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, int]]


async def counts(ramp: Ramp) -> Counts:
    """Both sides' packet counters at about one time, and the kernel's drops so far."""
    up = ramp.calls.up
    pbx, rig_side = await asyncio.gather(
        pbx_counts(ramp.r, up), ramp.world.rig_counts([p.caller for p in up]))
    drops = {who: udp_drops(group) for who, group in ramp.pids.items()
             if who in ("pbx", "rig_carrier", "rig_world", "rig_ai", "rig_desks")}
    return pbx, rig_side, drops


async def step(ramp: Ramp, target: int) -> dict[str, Any]:
    r, world, pids, calls, lag = ramp.r, ramp.world, ramp.pids, ramp.calls, ramp.lag
    answers_before, silent_before = len(calls.answer_ms), calls.silent
    await place(ramp, target - len(calls.up) - calls.silent)
    pbx_before, rig_before, drops_before = await counts(ramp)
    ticks = {who: sum(cpu_ticks(p) for p in group) for who, group in pids.items()}
    lag.take()
    start = time.monotonic()
    await asyncio.sleep(ramp.window_s)  # the measured window: calls talking, nothing else
    end = time.monotonic()
    cpu = {who: round((sum(cpu_ticks(p) for p in group) - ticks[who]) / TICK
                      / (end - start) * 100, 1) for who, group in pids.items()}
    pbx_after, rig_after, drops_after = await counts(ramp)
    lags = lag.take()
    packets = late = weak = sampled = ai_sampled = 0
    gaps: list[float] = []
    expected = round((end - start) * FRAMES_PER_S)
    for placed in calls.up:
        stats = await world.stream_stats(placed.caller, start, end)
        packets += stats["packets"]
        late += stats["late"]
        sampled += stats["sampled"]
        ai_sampled += stats["ai_sampled"]
        if stats["gap_max_ms"] is not None:
            gaps.append(stats["gap_max_ms"])
        # A caller with an agent for a while hears a voice too, only not the AI's.
        voiced = stats["ai_sampled"] + stats["agent_sampled"]
        if voiced * 2 < stats["sampled"] or stats["packets"] * 2 < expected:
            weak += 1
    dropped = sum(1 for placed in calls.up if placed.call_id not in r.control.calls)
    n = len(calls.up)
    lag_p99 = summary(lags)["p99"] or 0.0
    gap_max = max(gaps, default=0.0)
    window = end - start
    pbx = {k: over_window(pbx_before, pbx_after, k, window) for k in PBX_COUNTERS}
    carrier_received = over_window(rig_before, rig_after, "carrier_received", window)
    silent = calls.silent - silent_before + weak
    # The handoffs finished since the last step's end: while its calls came and in its
    # window.
    handoffs = ramp.handoffs.take() if ramp.handoffs is not None else None
    move_gap = move_gap_ms(handoffs) if handoffs is not None else 0.0
    knee = [reason for reason, hit in (
        (f"{dropped} calls dropped", dropped),
        (f"{silent} calls silent", silent),
        (f"loop lag p99 {lag_p99} ms", lag_p99 > KNEE_LOOP_LAG_MS),
        (f"a caller's gap {gap_max} ms", gap_max > KNEE_GAP_MS),
        (f"a caller's gap across a handoff {move_gap} ms", move_gap > KNEE_GAP_MS)) if hit]
    return {
        "calls": target,
        "up": n,
        "cpu_pct_of_core": {**cpu, "pbx_per_call": round(cpu["pbx"] / max(n, 1), 2)},
        "loop_lag_ms": summary(lags),
        "ai_packets_lost": max(0, expected * n - packets),
        "ai_packets_late": late,
        "ai_voice_share": round(ai_sampled / sampled, 3) if sampled else None,
        # Where the AI's packets to the callers went missing in the window, link by link:
        # the PBX's own count against the FRAMES_PER_S a call that a phone expects
        # (product), then the trunk into the carrier, then the carrier's relay to the
        # phone and the phone's socket (the rig's; udp_drops tells which process was late).
        "ai_packets_short": {
            "pbx_sent": max(0, round(expected * n - pbx["txcount"])),
            "trunk": round(pbx["txcount"] - carrier_received),
            "carrier_to_phone": round(carrier_received - packets),
        },
        # The call as the PBX saw it on its callers' legs: the callers' packets it missed,
        # its own the carrier reported lost (RTCP), the worst inbound jitter.
        "pbx_leg_quality": {
            "rx_lost": round(pbx["rxploss"]), "tx_lost": round(pbx["txploss"]),
            "rx_jitter_max_ms": round(max((c["rxjitter"] for c in pbx_after.values()),
                                          default=0.0), 1)},
        "carrier_rx_jitter_max_ms": round(max((c["rx_jitter"] for c in rig_after.values()),
                                              default=0.0), 1),
        # Datagrams the kernel dropped because a process did not read its socket in time.
        "udp_drops": {who: drops_after[who] - drops_before[who] for who in drops_after},
        "caller_gap_max_ms": round(gap_max, 1),
        "answer_ms": summary(calls.answer_ms[answers_before:]),
        "dropped_calls": dropped,
        "silent_calls": silent,
        "controller_mib_per_100_calls": round(
            (rss_kib(os.getpid()) - ramp.rss_before) / 1024 / max(n, 1) * 100, 1),
        **({"handoffs": handoffs} if handoffs is not None else {}),
        "knee": knee,  # why this step is the knee (empty: it is not)
    }


async def run(steps: list[int], window_s: float, recording: str, state_dir: Path, *,
              past_knee: bool = False, handoff_rate: float = DEFAULT_HANDOFF_RATE,
              on_step: Callable[[dict[str, Any]], None] = lambda _: None) -> dict[str, Any]:
    installation = await asyncio.to_thread(runtime.locate)
    most = max(steps)
    phones = desk_phones(handoff_rate)
    # The carrier holds two channels a caller (the call and its phone's RTP probe).
    async with asterisk_pair(installation, state_dir, f"capacity{os.getpid()}",
                             max_calls=2 * most + 20 + len(phones),
                             desk_phones=phones) as pair:
        world = await RemoteWorld.start(pair.carrier.ari_url, *pair.carrier.ari_auth,
                                        engine_process=True, desks_process=bool(phones),
                                        ahead=True)
        results: list[dict[str, Any]] = []
        tail: dict[str, Any] = {}
        try:
            async with rig(pair.pbx, world, state_dir / "bench.db") as r:
                # The rig apart too: the carrier's Asterisk, the World's process (the
                # callers' phones) and the AI engine's, each of which may run out first.
                # The callers' phones, the agents' desk phones and the AI engine each
                # in a process of its own.
                ai, desks = world.engine_pid or 0, world.desks_pid or 0
                ramp = Ramp(r, world, {"pbx": [pair.pbx.pid or 0],
                                       "controller": [os.getpid()],
                                       "rig": [pair.carrier.pid or 0, world.pid, ai, desks],
                                       "rig_carrier": [pair.carrier.pid or 0],
                                       "rig_world": [world.pid],
                                       "rig_ai": [ai],
                                       "rig_desks": [desks]}, window_s, recording)
                if phones:
                    ramp.handoffs = Handoffs(r, ramp.calls.up, await seat(r, phones),
                                             handoff_rate)
                ramp.lag.start()
                if ramp.handoffs is not None:
                    ramp.handoffs.start()
                try:
                    for target in steps:
                        try:
                            results.append(await step(ramp, target))
                        except (AriError, RuntimeError) as exc:
                            # A step the rig or the PBX could not even set up is past
                            # any knee: said as it is, with the steps before it kept.
                            results.append({"calls": target, "error": str(exc),
                                            "knee": [f"could not run: {exc}"]})
                            on_step(results[-1])
                            break
                        on_step(results[-1])
                        if results[-1]["knee"] and not past_knee:
                            break
                finally:
                    await ramp.lag.stop()
                    if ramp.handoffs is not None:
                        await ramp.handoffs.stop()
                        # Those under way as the last step ended, finished since.
                        tail = ramp.handoffs.take()
                    await hang_up_all(r, ramp.calls)
        finally:
            await world.close()
    knee = next((s["calls"] for s in results if s["knee"]), None)
    ended = {"handoffs_after_the_last_step": tail} if tail else {}
    return {"benchmark": "capacity", "asterisk": installation.version,
            "cores": os.cpu_count(), "window_s": window_s, "recording": recording,
            "handoff_rate_per_s": handoff_rate if phones else 0.0,
            "desk_agents": len(phones), "knee_calls": knee, "steps": results, **ended}


async def hang_up_all(r: Rig, calls: Calls) -> None:
    for placed in calls.up:
        if placed.call_id in r.control.calls:
            await r.hang_up_caller(placed)
    # A caller who never heard the AI may still be up on the PBX (answered late, or
    # waiting for it): the carrier hangs it up, so every call ends with an outcome.
    for placed in calls.unheard:
        with contextlib.suppress(RuntimeError):  # already gone on the carrier
            await r.hang_up_caller(placed)
    deadline = time.monotonic() + 60
    while r.control.calls and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def main(steps: list[int] | None, most: int | None, window_s: float, recording: str,
         as_json: bool, *, chart_path: Path | None = None, past_knee: bool = False,
         handoff_rate: float = DEFAULT_HANDOFF_RATE) -> int:
    if handoff_rate < 0:
        raise SystemExit("--handoff-rate: handoffs a second, 0 or more")
    chosen = [s for s in (steps or DEFAULT_STEPS) if most is None or s <= most]

    def on_step(result: dict[str, Any]) -> None:
        # Each step as it ends: a long ramp on a busy machine shows its progress, and a
        # run cut short keeps what it measured.
        if not as_json:
            print(json.dumps(result), flush=True)

    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        result = asyncio.run(run(chosen, window_s, recording, Path(tmp), past_knee=past_knee,
                                 handoff_rate=handoff_rate, on_step=on_step))
    measured = {**result, "steps": [s for s in result["steps"] if "error" not in s]}
    if chart_path is not None:
        chart_path.write_text(chart(measured))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"knee: {result['knee_calls'] or 'not reached'}")
    return 0
