"""The rig's carrier (web.bench.world): its phones behave as phones do.

A caller's phone goes quiet when the call ends; before, its probe sent to the freed
port until the World closed, so a long bench's ended calls kept loading the rig.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff.calls import CallState
from tests.waiting import until
from web.bench.rig import Pair, Rig, rig
from web.bench.world import local_world

pytestmark = [pytest.mark.integration]


async def test_a_callers_phone_goes_quiet_when_the_call_ends(
    quiet_pair: Pair, tmp_path: Path,
) -> None:
    async with local_world(quiet_pair.carrier) as world, \
            rig(quiet_pair.pbx, world, tmp_path / "db.sqlite") as r:
        placed = await r.place_call()
        await r.wait_hears(placed, "ai")
        probe = world.probes[placed.caller]
        assert probe.sending
        await r.hang_up_caller(placed)
        await until(lambda: not probe.sending, within=5,
                    why="the caller's phone still sends after the call ended")
        await until(lambda: _ended(r, placed.call_id))


async def _ended(r: Rig, call_id: str) -> bool:
    async with r.store.transaction() as tx:
        return (await tx.calls.get(call_id)).state is CallState.ENDED

