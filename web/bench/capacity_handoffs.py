"""`switchboard bench capacity`'s handoffs, at a fixed rate throughout the ramp.

Each goes to an agent with an open line: a SIP desk phone with the per-agent open-line
option, which the PBX called once when the agent went on duty and which answered by
itself (the INVITE's Call-Info asked it to). The phones are the rig's (they run in the
callers' phones' process, web.bench.world_process), registered with the product's PBX
as real desk phones do. A handoff is asked for as the AI asks, accepted through the
controller's Accept as `bench handoff` accepts, the agent and the caller talk a moment
(each side's tone), and the agent hands the caller back to the AI.

Back to the AI rather than hung up: the step keeps the calls it claims. A caller who
hung up would have to be replaced, and that call's set-up would be measured with the
step's. Each handoff reports, from what the caller hears:

- ``connect_ms``: from the Accept to the first frame of the agent's voice (as `bench
  handoff` measures it);
- ``caller_gap_ms``: the longest silence across the move to the agent (from the Accept
  to SETTLE_S after the agent is first heard, by when the AI has left), and
  ``back_gap_ms`` across the move back (from the return to SETTLE_S after the AI is
  heard again);
- whether the agent's phone heard the caller.

A tick that finds no idle line, or no caller with the AI alone, is skipped and counted
apart: the rig had nobody to hand over, the product did not fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from handoff.agents import EndpointKind, Presence
from pbx.asterisk_config import SipAgent
from web.bench.handoff import summary
from web.bench.rig import PlacedCall, Rig
from web.bench.waiting import until

DESK_PASSWORD = "desk-capacity-secret"
TALK_S = 1.0  # how long the agent and the caller talk (longer than SETTLE_S)
SETTLE_S = 0.4  # after the new voice is first heard, the old one has left by then
# An agent's turn: the move, the talk, the AI's first words back and the line parked
# again. Enough agents that a tick finds an idle line at the rate asked.
TURN_S = TALK_S + 2.0
SPARE_AGENTS = 2
HEARD_WITHIN_S = 5.0  # a voice not heard by then is a failed move
ERRORS_KEPT = 5  # per step: what went wrong, said, without a run's worth of repeats


def desk_phones(rate: float) -> tuple[SipAgent, ...]:
    """The agents' desk phones the PBX needs to know for handoffs at ``rate`` a second
    (none at 0)."""
    count = math.ceil(rate * TURN_S) + SPARE_AGENTS if rate > 0 else 0
    return tuple(SipAgent(f"desk-capacity{i}", DESK_PASSWORD, "deskphone", f"Agent {i}")
                 for i in range(1, count + 1))


@dataclass(frozen=True)
class DeskAgent:
    agent_id: int
    sip_user: str


async def seat(r: Rig, phones: tuple[SipAgent, ...]) -> list[DeskAgent]:
    """The desk phones' agents on duty with open lines, their lines up and idle. Ada goes
    off duty: her phone is the carrier's, on the ringing path, which the run is not
    about."""
    agents: list[DeskAgent] = []
    async with r.store.transaction() as tx:
        await tx.agents.set_duty(r.agent_id, False)
        for phone in phones:
            created = await tx.agents.create(
                login=phone.name, display_name=phone.display_name, sip_user=phone.name,
                sip_password=phone.password, endpoint_kind=EndpointKind.DESKPHONE)
            await tx.agents.set_open_line(created.id, True, actor="bench")
            await tx.agents.set_duty(created.id, True)
            await tx.agents.set_presence(created.id, Presence.AVAILABLE)
            agents.append(DeskAgent(created.id, phone.name))
    await r.world.open_desk_phones("127.0.0.1", r.pbx.spec.ports.sip,
                                   [[phone.name, phone.password] for phone in phones])
    for agent in agents:
        await until(functools.partial(r.control.phone_registered, agent.sip_user),
                    why=f"{agent.sip_user} never registered")
        # As the desk does when an agent with the option goes on duty.
        await r.control.open_line(agent.agent_id, agent.sip_user, desk_phone=True)
    for agent in agents:
        await until(functools.partial(r.control.lines.idle, agent.agent_id),
                    why=f"{agent.sip_user}'s line never opened")
    return agents


@dataclass
class Handoffs:
    """Handoffs started every 1/``rate`` s among ``calls`` (the ramp's callers up, a list
    that grows as they come) to ``agents``; each step takes what finished since the last."""

    r: Rig
    calls: list[PlacedCall]
    agents: list[DeskAgent]
    rate: float
    done: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    _calls_busy: set[str] = field(default_factory=set)
    _agents_busy: set[int] = field(default_factory=set)
    _running: set[asyncio.Task[None]] = field(default_factory=set)
    _ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.rate > 0 and self.agents:
            self._ticker = asyncio.create_task(self._tick(), name="capacity handoffs")

    async def _tick(self) -> None:
        started, turn = time.monotonic(), 0
        while True:
            turn += 1
            # Paced from the start: a slow tick does not lower the rate.
            await asyncio.sleep(max(0.0, started + turn / self.rate - time.monotonic()))
            picked = self._pick()
            if picked is None:
                self.skipped += 1
                continue
            task = asyncio.create_task(self._one(*picked))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _pick(self) -> tuple[PlacedCall, DeskAgent] | None:
        control = self.r.control
        agents = [a for a in self.agents
                  if a.agent_id not in self._agents_busy and control.lines.idle(a.agent_id)]
        calls = [p for p in self.calls if p.call_id not in self._calls_busy
                 and (live := control.calls.get(p.call_id)) is not None
                 and live.ai is not None and live.agent is None and live.handoff_id is None]
        if not agents or not calls:
            return None
        return random.choice(calls), random.choice(agents)

    async def _one(self, placed: PlacedCall, agent: DeskAgent) -> None:
        r, call_id = self.r, placed.call_id
        self._calls_busy.add(call_id)
        self._agents_busy.add(agent.agent_id)
        result: dict[str, Any] = {"connect_ms": None, "failed": True}
        try:
            handoff_id = await r.control.request_handoff(call_id, reason="caller_asked",
                                                         summary="capacity")
            accepted_at = time.monotonic()
            await r.control.accept(handoff_id, agent.agent_id)
            heard = await heard_after(r, placed, "agent", accepted_at)
            result["connect_ms"] = (heard - accepted_at) * 1000
            await asyncio.sleep(TALK_S)  # the call with the agent, not a wait for anything
            result["caller_gap_ms"] = await r.gap_ms(placed, accepted_at, heard + SETTLE_S)
            heard_caller = await r.world.desk_heard_caller(agent.sip_user, accepted_at)
            returned_at = time.monotonic()
            await r.control.return_to_ai(call_id)
            back = await heard_after(r, placed, "ai", returned_at)
            await asyncio.sleep(max(0.0, back + SETTLE_S - time.monotonic()))
            result["back_gap_ms"] = await r.gap_ms(placed, returned_at, back + SETTLE_S)
            if heard_caller is None:
                result["error"] = "the agent never heard the caller"
            else:
                result["failed"] = False
        # Whatever stopped a handoff (no voice in time, the PBX, the ledger, the rig's
        # process) is one failed handoff of the step, said, and the ramp goes on.
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"[:200]
            # An agent who still has the caller gives them back, so the step keeps its
            # callers with the AI (nothing to give back: the product did it already).
            with contextlib.suppress(Exception):
                await r.control.return_to_ai(call_id)
        finally:
            self._calls_busy.discard(call_id)
            self._agents_busy.discard(agent.agent_id)
            self.done.append(result)

    def take(self) -> dict[str, Any]:
        """The handoffs finished since the last take, as a step reports them."""
        done, self.done = self.done, []
        skipped, self.skipped = self.skipped, 0
        errors = list(dict.fromkeys(x["error"] for x in done if "error" in x))
        return {
            "done": sum(1 for x in done if not x["failed"]),
            "failed": sum(1 for x in done if x["failed"]),
            "skipped": skipped,
            "connect_ms": summary([x["connect_ms"] for x in done
                                   if x["connect_ms"] is not None]),
            "caller_gap_ms": summary([x["caller_gap_ms"] for x in done
                                      if "caller_gap_ms" in x]),
            "back_gap_ms": summary([x["back_gap_ms"] for x in done if "back_gap_ms" in x]),
            "errors": errors[:ERRORS_KEPT],
        }

    async def stop(self) -> None:
        """No new handoff; those under way end (each bounded by its own waits), so every
        caller is back with the AI before the run hangs them up."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await asyncio.gather(*self._running, return_exceptions=True)


async def heard_after(r: Rig, placed: PlacedCall, who: str, after: float) -> float:
    """When the caller first heard ``who`` after ``after``, waited for in the phones'
    process: polled from here, the wait would be counted as the controller's CPU."""
    at = await r.world.wait_heard(placed.caller, who, after, HEARD_WITHIN_S)
    if at is None:
        raise TimeoutError(f"the caller never heard {who}")
    return float(at)


def move_gap_ms(handoffs: dict[str, Any]) -> float:
    """The longest silence a caller heard across either move."""
    return max(handoffs["caller_gap_ms"]["max"] or 0.0, handoffs["back_gap_ms"]["max"] or 0.0)
