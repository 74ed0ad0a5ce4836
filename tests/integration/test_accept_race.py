"""The accept race over HTTP (R8 of issue 16): one agent with tabs open on two dashboard
servers (two web front-ends on one store, each with its own sessions, hub and throttle,
as two workers would have) clicks Accept in all of them at once, on a real call in a real
Asterisk. Exactly one click wins; every other gets a 409 saying why; the caller is in one
bridge with one agent leg, and her phone rang once.

Both front-ends drive the one call controller of this process: the product runs one
controller per PBX (the live call and its channels are its own), so a front-end in
another process could not take this call at all; what decides between the clicks is the
store's conditional UPDATE, never an in-process lock of the web layer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from handoff.calls import CallState
from handoff.events import EventHub
from handoff.handoffs import HandoffState
from tests.dashboard_fixtures import PASSWORD, Browser, cheap_passwords, free_port
from tests.integration.asterisk_helpers import Pair, ari
from tests.waiting import until
from web.bench.rig import Rig, rig
from web.bench.world import AGENT_PHONE_NUMBER, World, local_world
from web.dashboard import DashboardOptions, setup_dashboard

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

ROUNDS = 5
TABS_PER_SERVER = 2


@pytest_asyncio.fixture
async def world(quiet_pair: Pair) -> AsyncIterator[World]:
    async with local_world(quiet_pair.carrier) as w:
        yield w


@contextlib.asynccontextmanager
async def front_end(r: Rig) -> AsyncIterator[str]:
    """A dashboard server on the rig's store and call controller; yields its origin."""
    port = free_port()
    app = web.Application()
    setup_dashboard(app, store=r.store, hub=EventHub(), commands=r.control,
                    origin=f"http://127.0.0.1:{port}", secure_cookies=False,
                    options=DashboardOptions(passwords=cheap_passwords()))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def agent_phone_legs(world: World) -> int:
    return sum(1 for c in await world.ari.channels.list()
               if c["dialplan"]["exten"] == AGENT_PHONE_NUMBER)


async def test_one_agents_tabs_on_two_servers_accepting_at_once_one_wins_the_others_409(
    quiet_pair: Pair, world: World, tmp_path: Path,
) -> None:
    async with rig(quiet_pair.pbx, world, tmp_path / "db.sqlite") as r:
        async with r.store.transaction() as tx:
            await tx.agents.set_password_hash(r.agent_id, cheap_passwords().hash(PASSWORD))
            ada = await tx.agents.get(r.agent_id)
        async with front_end(r) as first, front_end(r) as second:
            tabs = [Browser(origin) for origin in (first, second)
                    for _ in range(TABS_PER_SERVER)]
            try:
                for tab in tabs:
                    assert (await tab.login(ada.login)).status == 303
                for _ in range(ROUNDS):
                    placed = await r.place_call()
                    handoff_id = await r.control.request_handoff(
                        placed.call_id, reason="caller_asked", summary="x")
                    clicks = await asyncio.gather(*(
                        tab.post_json(f"/api/handoffs/{handoff_id}/accept", {})
                        for tab in tabs))
                    statuses = sorted(click.status for click in clicks)
                    assert statuses == [200] + [409] * (len(tabs) - 1), statuses
                    for click in clicks:
                        if click.status == 409:
                            refusal = await click.json()
                            assert refusal["error"] in ("already_taken", "busy"), refusal
                            assert refusal["reason"], refusal
                    live = r.control.calls[placed.call_id]
                    await asyncio.wait_for(live.answered.wait(), 5)
                    await r.control.settled(live)
                    # One bridge holds the caller, with one agent leg; her phone rang once.
                    _, bridges = await ari(quiet_pair.pbx, "GET", "/bridges")
                    holding = [b for b in bridges if live.caller in b["channels"]]
                    assert len(holding) == 1
                    assert set(holding[0]["channels"]) == {live.caller, live.agent}
                    assert await agent_phone_legs(world) == 1
                    async with r.store.transaction() as tx:
                        handoff = await tx.handoffs.get(handoff_id)
                    assert handoff.accepted_by == ada.id
                    assert handoff.state is HandoffState.CONNECTED
                    await r.hang_up_caller(placed)

                    async def ended(call_id: str = placed.call_id) -> bool:
                        async with r.store.transaction() as tx:
                            return (await tx.calls.get(call_id)).state is CallState.ENDED

                    await until(ended)
                    await until(lambda: not r.control.calls)
            finally:
                for tab in tabs:
                    await tab.close()
