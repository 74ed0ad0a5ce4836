"""Assistants changed while `switchboard run` runs, on its real Asterisk and the demo
carrier: a new assistant's number answers without a restart; its token is cut off at
once when rotated (HTTP and events socket); its numbers and engine change under a call
that goes on, and the new number answers; an unknown number is refused (404) with a log
line, or goes to the default assistant; the CLI's changes are taken within its check; a
box at its routing.max_active_calls refuses the next caller as congestion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import pytest

from handoff.calls import CallState
from handoff.store import Store, create_store_engine
from handoff.store.models import Call
from tests.dashboard_fixtures import Browser
from tests.product_run import REPO, Product, product
from tests.waiting import until
from web.ai_api import API_PREFIX
from web.ai_api.events import TOKEN_REVOKED
from web.bench.world import World

__all__ = ["product"]

pytestmark = pytest.mark.integration


@dataclass
class Running:
    """The running product seen from outside: its store, the carrier's phones, an admin."""

    product: Product
    store: Store
    world: World
    admin: Browser
    # The Q.850 cause each carrier-side leg ended with (1: unallocated, the PBX's 404).
    causes: dict[str, int] = field(default_factory=dict)

    async def call_of(self, caller: str) -> Call | None:
        async with self.store.transaction() as tx:
            rows = [c for c in await tx.calls.open_calls() if c.caller_number == caller]
        return rows[0] if rows and rows[0].state is CallState.WITH_AI else None

    async def assistant_of(self, call: Call) -> str:
        async with self.store.transaction() as tx:
            return (await tx.assistants.get(call.assistant_id or 0)).name

    async def hears(self, caller: str, who: str, since: float) -> bool:
        """Half a second of ``who`` ("ai": the tone engine; "~": a voice) since then."""
        frames = await self.world.frames(caller, since, time.monotonic())
        return sum(1 for _, heard in frames if heard == who) > 25

    async def refused(self, caller: str) -> int | None:
        return self.causes.get(self.world._outbound[caller])

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.product.output)

    async def ended(self, caller: str) -> bool:
        async with self.store.transaction() as tx:
            return not [c for c in await tx.calls.open_calls() if c.caller_number == caller]


@asynccontextmanager
async def running(product: Product) -> AsyncIterator[Running]:
    await product.start()
    spec: Mapping[str, Any] = product.state()["carrier_instance"]["spec"]  # type: ignore[index]
    world = World(f"http://127.0.0.1:{spec['ports']['http']}/ari",
                  (spec["ari_user"], spec["ari_password"]))
    await world.start()
    engine = create_store_engine(f"sqlite:///{product.data / 'switchboard.db'}")
    admin = Browser(product.url)
    assert (await admin.login("admin", await product.new_password("admin"))).status == 303
    it = Running(product, Store(engine), world, admin)

    async def destroyed(event: Mapping[str, Any]) -> None:
        it.causes[str(event["channel"]["id"])] = int(event.get("cause", 0))

    world.ari.on("ChannelDestroyed", destroyed)
    try:
        yield it
    finally:
        await world.close()
        await admin.close()
        await engine.dispose()


async def _cli(product: Product, *command: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *product.argv(*command), cwd=REPO, stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    return out


async def _post_line(product: Product, call_id: str, token: str) -> int:
    async with aiohttp.ClientSession() as http, http.post(
            f"{product.url}{API_PREFIX}/calls/{call_id}/transcript",
            json={"speaker": "ai", "text": "Hello from sales."},
            headers={"Authorization": f"Bearer {token}"}) as reply:
        return reply.status


async def test_assistants_change_while_switchboard_runs_and_calls_go_on(
    product: Product,
) -> None:
    async with running(product) as it:
        pid = product.state()["asterisk_pid"]
        # An admin adds an assistant on an engine of theirs: its number answers at once.
        made = await it.admin.post_json("/api/admin/assistants", {
            "name": "sales", "numbers": ["2100"], "engine": it.world.engine.address})
        assert made.status == 201
        body = await made.json()
        sales_id, token = body["assistant"]["id"], body["token"]
        first = await it.world.place_call("2100")
        call = await until(lambda: it.call_of(first))
        assert await it.assistant_of(call) == "sales"
        await until(lambda: it.hears(first, "ai", 0.0))
        assert await _post_line(product, call.id, token) == 201

        # The token is rotated: the old one is refused at once, its events socket closed.
        async with aiohttp.ClientSession() as http, http.ws_connect(
                f"{product.url}{API_PREFIX}/events",
                headers={"Authorization": f"Bearer {token}"}) as events:
            ready = await events.receive_json(timeout=10)
            assert ready["type"] == "ready" and call.id in ready["calls"]
            rotated = await it.admin.post_json(f"/api/admin/assistants/{sales_id}/token", {})
            new_token = (await rotated.json())["token"]
            assert await _post_line(product, call.id, token) == 401
            assert await _post_line(product, call.id, new_token) == 201
            closing = await events.receive(timeout=10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert events.close_code == TOKEN_REVOKED

        # Mid-call, sales moves to 2101 and to the built-in receptionist. The call up
        # keeps its AI (the tone goes on) and its state; nothing restarted.
        edited = await it.admin.post_json(f"/api/admin/assistants/{sales_id}", {
            "numbers": ["2101"], "engine": "builtin"})
        assert edited.status == 200 and (await edited.json())["live"] is True
        changed_at = time.monotonic()
        await until(lambda: it.hears(first, "ai", changed_at))
        assert await until(lambda: it.call_of(first)) is not None
        # The new number answers, with the receptionist speaking for sales (it was
        # seated with a token of sales': its greeting reached the transcript).
        second = await it.world.place_call("2101")
        moved = await until(lambda: it.call_of(second))
        assert await it.assistant_of(moved) == "sales"
        await until(lambda: it.hears(second, "~", 0.0))

        async def greeted() -> bool:
            async with it.store.transaction() as tx:
                return any(s.speaker.value == "ai"
                           for s in await tx.transcripts.for_call(moved.id))

        await until(greeted)
        # The old number is nobody's now: refused as unallocated, and the log says so.
        third = await it.world.place_call("2100")
        assert await until(lambda: it.refused(third)) == 1
        await until(lambda: it.logged(
            "call to 2100 refused (no assistant answers it; routing.unknown_numbers = reject)"))

        # From the server's command line: taken within the product's directory check.
        out = await _cli(product, "assistant", "add", "support", "--number", "2200",
                         "--engine", "builtin")
        assert "held by the built-in receptionist" in out
        await until(lambda: it.logged("took the people, assistants and trunks changed"), 30)
        fourth = await it.world.place_call("2200")
        supported = await until(lambda: it.call_of(fourth))
        assert await it.assistant_of(supported) == "support"

        for caller in (first, second, fourth):
            await it.world.hang_up(caller)
            await until(partial(it.ended, caller))
        assert product.state()["asterisk_pid"] == pid


async def test_unknown_numbers_go_to_the_default_assistant_and_a_full_box_refuses(
    product: Product,
) -> None:
    product.settings.append("routing.unknown_numbers=receptionist")
    # This box takes one call at a time.
    product.settings.append("routing.max_active_calls=1")
    # Set up before the start, from the command line: sales exists but is disabled.
    await _cli(product, "assistant", "add", "sales", "--number", "2100", "--engine", "builtin")
    await _cli(product, "assistant", "disable", "sales")
    async with running(product) as it:
        for number in ("2999", "2100"):
            caller = await it.world.place_call(number)
            call = await until(partial(it.call_of, caller))
            assert await it.assistant_of(call) == "receptionist"
            await until(partial(it.hears, caller, "~", 0.0))
            if number == "2999":
                # Full: the next caller is refused at once as congestion (SIP 503: the
                # carrier's leg ends with Q.850 34), never answered, logged and
                # counted; the call up goes on.
                over = await it.world.place_call("2000")
                assert await until(partial(it.refused, over)) == 34
                await until(lambda: it.logged("call to 2000 refused: 1 calls up, the limit "
                                              "(routing.max_active_calls)"))
                assert await product.metric(
                    'switchboard_calls_refused_total{reason="full"}') == 1
                async with it.store.transaction() as tx:
                    assert [c.caller_number for c in await tx.calls.open_calls()] == [caller]
                assert await it.call_of(caller) is not None
            await it.world.hang_up(caller)
            await until(partial(it.ended, caller))
        assert it.logged("call to 2999 (no assistant answers it): routing.unknown_numbers "
                         "sends it to receptionist")
        assert it.logged("call to 2100 (no assistant answers it)")
