"""`switchboard bench handoff`: how fast and how cleanly a live caller reaches an agent.

N calls on a real PBX and a carrier Asterisk, one after the other. Each caller, the AI
and the agent send their own tone; for each call we measure, from what the caller's
side receives:

- ``connect_ms``: from the Accept to the first frame of the agent's voice at the caller;
- ``caller_gap_ms``: the longest silence the caller hears across the move: from the
  Accept (a silence already running then counts whole) to 0.4 s after the agent is
  first heard, by when the AI has left. Only the move: a frame the AI engine sent late a
  moment before the Accept is the engine's hiccup, not the handoff's;

and we count ``caller_reinvites`` (in-dialog INVITEs the carrier receives on a caller's
leg: must be 0, the caller's dialog is never touched), ``dropped_calls`` (callers who
lost the line before they hung up) and ``failed_handoffs``.

Where the time goes, for both ways: ``agent_up_ms`` (from the Accept to Asterisk
reporting the agent's leg answered) and ``heard_after_up_ms`` (from then to the caller
hearing the agent: the media path through the bridge).

With ``--cross-node`` every other call is accepted on a second node, whose controller
has node A call it for the agent (web.bench.xnode_handoff): the same figures for those
calls under ``cross_node``, and what the leg between the nodes adds at p50 and p99.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from handoff.calls import CallState
from handoff.handoffs import HandoffState
from pbx import runtime
from web.bench.queue_baseline import Baseline
from web.bench.rig import AGENT_SIP_USER, Rig, asterisk_pair, rig
from web.bench.world import AGENT_PHONE_NUMBER
from web.bench.world_process import RemoteWorld
from web.bench.xnode_handoff import NODE_A, node_b

BASELINE_NUMBER = "2999"
_MOVING = frozenset({HandoffState.ACCEPTED, HandoffState.CONNECTING})


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 1)

    return {"p50": round(statistics.median(ordered), 1), "p99": pct(0.99),
            "max": round(ordered[-1], 1)}


class AgentUps:
    """When Asterisk said each agent leg answered, on this process's monotonic clock."""

    def __init__(self) -> None:
        self.ours: dict[str, float] = {}  # ARI: by leg id
        self.queue: list[float] = []  # AMI: the queue's member channels, in order

    async def on_ari(self, event: Mapping[str, Any]) -> None:
        channel = event.get("channel") or {}
        if event.get("type") == "ChannelStateChange" and channel.get("state") == "Up":
            # The event's own time: handlers for one call run in order, so the time we
            # receive it can trail behind the controller's own handler.
            at = datetime.strptime(str(event["timestamp"]), "%Y-%m-%dT%H:%M:%S.%f%z")
            self.ours.setdefault(str(channel["id"]), monotonic_of(at.timestamp()))

    async def on_ami(self, event: Mapping[str, Any]) -> None:
        if (str(event.get("ChannelStateDesc")) == "Up"
                and str(event.get("Channel", "")).startswith(f"PJSIP/{AGENT_SIP_USER}-")):
            self.queue.append(time.monotonic())


def monotonic_of(wall: float) -> float:
    return wall - (time.time() - time.monotonic())


async def one_handoff(r: Rig, ups: AgentUps,
                      accept: Callable[[int, int], Awaitable[None]] | None = None
                      ) -> dict[str, Any]:
    """One handoff, accepted on the rig's controller, or through ``accept`` (another
    node's controller: web.bench.xnode_handoff)."""
    placed = await r.place_call()
    await r.wait_hears(placed, "ai")
    await r.world.prepare_agent_phone()
    await asyncio.sleep(0.3)
    handoff_id = await r.control.request_handoff(
        placed.call_id, reason="caller_asked", summary="benchmark"
    )
    accepted_at = time.monotonic()
    await (accept or r.control.accept)(handoff_id, r.agent_id)
    result: dict[str, Any] = {"call_id": placed.call_id}
    try:
        heard = await r.wait_hears(placed, "agent", after=accepted_at)
        # Read once heard: a leg another node asked for is created after its accept.
        leg = r.control.calls[placed.call_id].agent
        await asyncio.sleep(0.5)
        result["connect_ms"] = (heard - accepted_at) * 1000
        result["caller_gap_ms"] = await r.gap_ms(placed, accepted_at, heard + 0.4)
        result.update(steps(accepted_at, ups.ours.get(leg or ""), heard))
    except TimeoutError:
        result["connect_ms"] = None
    # A move still completing (the AI leaving once the agent is heard) is not a failure:
    # its outcome is waited for, a bounded while.
    deadline = time.monotonic() + 5
    while True:
        async with r.store.transaction() as tx:
            call = await tx.calls.get(placed.call_id)
            handoff = await tx.handoffs.get(handoff_id)
        if handoff.state not in _MOVING or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    result["dropped"] = call.state is CallState.ENDED  # the caller lost the line before hanging up
    result["failed"] = handoff.state is not HandoffState.CONNECTED
    await r.hang_up_caller(placed)
    deadline = time.monotonic() + 10
    while placed.call_id in r.control.calls and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await r.world.forget(placed.caller)
    return result


def count_caller_reinvites(history: str) -> int:
    """INVITEs the carrier received from the PBX other than those ringing the agent."""
    count = 0
    for line in history.splitlines():
        match = re.search(r"<==\s+\S+\s+INVITE\s+sip:([^@\s]+)@", line)
        if match and match.group(1) != AGENT_PHONE_NUMBER:
            count += 1
    return count


def steps(accepted_at: float, up: float | None, heard: float) -> dict[str, float]:
    if up is None:
        return {}
    return {"agent_up_ms": (up - accepted_at) * 1000, "heard_after_up_ms": (heard - up) * 1000}


async def one_queue_handoff(r: Rig, baseline: Baseline, ups: AgentUps) -> dict[str, Any]:
    placed = await r.place_call(BASELINE_NUMBER, wait_ai=False)
    call = await baseline.wait_call(placed.caller)
    await r.wait_hears(placed, "ai")
    await r.world.prepare_agent_phone()
    await asyncio.sleep(0.3)
    accepted_at = time.monotonic()
    await baseline.redirect_to_queue(call)
    result: dict[str, Any] = {"dropped": False, "failed": False}
    try:
        heard = await r.wait_hears(placed, "agent", after=accepted_at)
        await asyncio.sleep(0.5)
        result["connect_ms"] = (heard - accepted_at) * 1000
        result["caller_gap_ms"] = await r.gap_ms(placed, accepted_at, heard + 0.4)
        up = next((at for at in ups.queue if at >= accepted_at), None)
        result.update(steps(accepted_at, up, heard))
    except TimeoutError:
        result["connect_ms"] = None
        result["failed"] = True
    await r.hang_up_caller(placed)
    # Let the agent's phone go idle again: app_queue skips a member still "in use" and
    # retries a second later, which would be measured as a slow handoff.
    await asyncio.sleep(1.0)
    await r.world.forget(placed.caller)
    return result


def report(results: list[dict[str, Any]], reinvites: int) -> dict[str, Any]:
    connects = [x["connect_ms"] for x in results if x.get("connect_ms") is not None]
    gaps = [x["caller_gap_ms"] for x in results if x.get("caller_gap_ms") is not None]
    return {
        "connect_ms": summary(connects),
        "caller_gap_ms": summary(gaps),
        "caller_reinvites": reinvites,
        "dropped_calls": sum(1 for x in results if x["dropped"]),
        "failed_handoffs": sum(1 for x in results if x["failed"]),
        **{step: summary([x[step] for x in results if step in x])
           for step in ("agent_up_ms", "heard_after_up_ms")},
    }


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for metric in ("connect_ms", "caller_gap_ms"):
        for stat in ("p50", "p99", "max"):
            a, b = ours[metric][stat], theirs[metric][stat]
            out[f"{metric}.{stat}"] = round(a / b, 2) if a is not None and b else None
    return out


async def run(calls: int, state_dir: Path, baseline: str | None,
              cross_node: bool = False) -> dict[str, Any]:
    installation = await asyncio.to_thread(runtime.locate)
    cross_results: list[dict[str, Any]] = []
    async with asterisk_pair(installation, state_dir, f"bench{os.getpid()}") as pair:
        await pair.carrier.cli("pjsip set history on")
        # The phones, probes and AI run in a child process: their work must not compete
        # with the controller being timed (in production it has its own process too).
        world = await RemoteWorld.start(pair.carrier.ari_url, *pair.carrier.ari_auth)
        try:
            async with rig(pair.pbx, world, state_dir / "bench.db",
                           node=NODE_A if cross_node else None) as r:
                ups = AgentUps()
                r.pbx_ari.on("ChannelStateChange", ups.on_ari)
                if cross_node:
                    async with node_b(installation, state_dir, pair, r) as b:
                        results = []
                        for _ in range(calls):  # alternated: both meet the same load
                            results.append(await one_handoff(r, ups))
                            cross_results.append(
                                await one_handoff(r, ups, b.control.accept))
                else:
                    results = [await one_handoff(r, ups) for _ in range(calls)]
                history = await pair.carrier.cli("pjsip show history")
                queue_results: list[dict[str, Any]] = []
                if baseline == "queue":
                    await pair.carrier.cli("pjsip set history clear")
                    classic = Baseline(pair.pbx, world.engine_address)
                    await classic.start()
                    classic.ami.on("Newstate", ups.on_ami)
                    try:
                        queue_results = [
                            await one_queue_handoff(r, classic, ups) for _ in range(calls)
                        ]
                    finally:
                        await classic.close()
                    queue_history = await pair.carrier.cli("pjsip show history")
        finally:
            await world.close()
    out: dict[str, Any] = {
        "benchmark": "handoff",
        "agent": "sip desk phone answering at once",
        "calls": calls,
        "asterisk": installation.version,
        **report(results, count_caller_reinvites(history)),
    }
    if cross_node:
        # Node B's INVITEs to Ada's phone are not the caller's: the count above holds.
        other = report(cross_results, 0)
        other.pop("caller_reinvites")
        out["cross_node"] = {"method": "accepted on node B: node A calls node B, which "
                                       "rings the agent", **other}
        out["cross_node_cost_ms"] = {
            f"{metric}.{stat}": round(other[metric][stat] - out[metric][stat], 1)
            if other[metric][stat] is not None and out[metric][stat] is not None else None
            for metric in ("connect_ms", "caller_gap_ms") for stat in ("p50", "p99")}
    if baseline == "queue":
        theirs = report(queue_results, count_caller_reinvites(queue_history))
        out["baseline"] = {"method": "AMI Redirect into app_queue", **theirs}
        out["ratio_to_baseline"] = ratios(out, theirs)
    return out


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        width = max(len(key) for key in result)
        for key, value in result.items():
            print(f"{key:{width}} {value}")


def main(calls: int, as_json: bool, baseline: str | None = None,
         cross_node: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        print_result(asyncio.run(run(calls, Path(tmp), baseline, cross_node)), as_json)
    return 0
