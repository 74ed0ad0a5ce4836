"""`switchboard bench capacity` runs handoffs during its ramp and reports them: a ramp
of two recorded AI calls, with handoffs to desk phones that keep an open line.

The benchmark starts its own PBX and carrier (its PBX knows the agents' desk phones) and
checks, as the rig does for every run, that each call ended with an outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from web.bench import capacity

pytestmark = pytest.mark.integration


def _all_handoffs(result: dict[str, Any]) -> list[dict[str, Any]]:
    # A handoff under way as the step's window closed is reported after the last step.
    return [*(s["handoffs"] for s in result["steps"]), result["handoffs_after_the_last_step"]]


async def test_the_ramp_hands_callers_to_open_lines_and_back_to_the_ai(tmp_path: Path) -> None:
    result = await capacity.run([2], window_s=3.0, recording="bridge", state_dir=tmp_path,
                                handoff_rate=1.0)
    assert result["handoff_rate_per_s"] == 1.0 and result["desk_agents"] >= 2
    (step,) = result["steps"]
    assert "error" not in step, step
    handoffs = _all_handoffs(result)
    assert sum(h["done"] for h in handoffs) >= 1, handoffs
    assert sum(h["failed"] for h in handoffs) == 0, handoffs
    # Each done handoff was timed as `bench handoff` times one, across both moves.
    timed = [h for h in handoffs if h["done"]]
    assert all(h["connect_ms"]["p50"] is not None and h["caller_gap_ms"]["max"] is not None
               and h["back_gap_ms"]["max"] is not None for h in timed)
    # Handed back, not hung up: the step kept its callers, and they heard a voice.
    assert step["up"] == 2 and step["dropped_calls"] == 0
    # The agents' desk phones ran in a process of their own, whose CPU is the rig's.
    cpu = step["cpu_pct_of_core"]
    assert cpu["rig_desks"] > 0, cpu
    assert cpu["rig"] >= cpu["rig_world"] + cpu["rig_desks"], cpu

