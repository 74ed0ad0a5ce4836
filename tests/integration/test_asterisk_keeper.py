"""An Asterisk that dies under `switchboard run` is started again (web.asterisk_keeper).

kill -9 of the product's own Asterisk with a caller talking to the AI: the call's row
ends with an outcome, /status goes degraded and comes back by itself, the restart is
counted on /metrics and written where `switchboard doctor` reads the PID, and a new
call from the demo carrier is answered by the AI again, with nobody doing anything.
"""

from __future__ import annotations

import os
import signal

import aiohttp
import pytest

from handoff.calls import CallState
from handoff.store import Store, create_store_engine
from tests.product_run import Product, product
from tests.waiting import until
from web.bench.world import World

__all__ = ["product"]

pytestmark = pytest.mark.integration


async def restarts_counted(product: Product) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{product.url}/metrics") as page:
        text = await page.text()
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("switchboard_asterisk_restarts_total{")}


async def test_a_dead_asterisk_is_started_again_and_takes_calls(product: Product) -> None:
    await product.start()
    state = product.state()
    carrier = state["carrier_instance"]
    assert isinstance(carrier, dict)
    spec = carrier["spec"]
    old_pid = int(str(state["asterisk_pid"]))
    assert await restarts_counted(product) == {}

    engine = create_store_engine(f"sqlite:///{product.data / 'switchboard.db'}")
    store = Store(engine)
    world = World(f"http://127.0.0.1:{spec['ports']['http']}/ari",
                  (spec["ari_user"], spec["ari_password"]))
    await world.start()
    try:
        async def with_ai(caller: str) -> str | None:
            async with store.transaction() as tx:
                rows = [c.id for c in await tx.calls.open_calls()
                        if c.caller_number == caller and c.state is CallState.WITH_AI]
            return rows[0] if rows else None

        caller = await world.place_call("2000")
        call_id = await until(lambda: with_ai(caller))

        os.kill(old_pid, signal.SIGKILL)  # a crash: no goodbye to anyone

        async def degraded() -> bool:
            return not await product.healthy()

        await until(degraded, why="/status never said the PBX was gone")
        await until(product.healthy, within=90, why="the PBX did not come back")

        # The call it carried ended with an outcome, not left open.
        async def ended() -> bool:
            async with store.transaction() as tx:
                call = await tx.calls.get(call_id)
            return call.state is CallState.ENDED and call.outcome is not None

        await until(ended)
        new_pid = int(str(product.state()["asterisk_pid"]))
        assert new_pid != old_pid
        assert await restarts_counted(product) == {_name(state): 1.0}
        assert any("Asterisk" in line and "died" in line for line in product.output)

        # New calls are answered by the AI again.
        second = await world.place_call("2000")
        await until(lambda: with_ai(second))
        await world.hang_up(second)
    finally:
        await world.close()
        await engine.dispose()


def _name(state: dict[str, object]) -> str:
    entry = state["pbx_instance"]
    assert isinstance(entry, dict)
    return str(entry["spec"]["name"])
