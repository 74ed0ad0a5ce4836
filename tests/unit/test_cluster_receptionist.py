"""Every node of a cluster runs a built-in receptionist of its own on the shared store:
each keeps a token its own node's AI API accepts, and seating one does not take the
other's away (it did: each wrote its token's hash into the one shared assistant row, so
the calls of whichever node seated first had their handoffs refused, 401)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from handoff.assistants import EngineKind
from handoff.calls import CallEvent
from handoff.events import EventHub
from handoff.settings import Settings
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.ai_api_fixtures import FakeCommands
from web.ai_api import API_PREFIX, hash_control_token, new_control_token, setup_ai_api
from web.services import Services


class FakeSeats:
    """The built-in receptionist as seat_builtin sees it."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    async def serve(self, assistant: str, token: str) -> None:
        self.tokens[assistant] = token

    async def release(self, assistant: str) -> None:
        self.tokens.pop(assistant, None)


async def test_each_node_s_receptionist_keeps_a_token_its_own_node_accepts(
    tmp_path: Path,
) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path}/switchboard.db")
    await upgrade_to_head(engine)
    shared = Store(engine)
    async with shared.transaction() as tx:
        assistant = await tx.assistants.create(
            name="receptionist", numbers=["2000"], engine=EngineKind.BUILTIN,
            control_token_hash=hash_control_token(new_control_token()))
        call = await tx.calls.create(caller_number="+15550100", caller_channel_id="c.1",
                                     assistant_id=assistant.id)
        await tx.calls.apply(call.id, CallEvent.ANSWER)
    nodes: list[tuple[Services, TestClient[web.Request, web.Application], FakeSeats]] = []
    try:
        for name in ("node-a", "node-b"):
            store = Store(engine, node=name)
            services = Services(settings=Settings(), db=engine, store=store)
            app = web.Application()
            setup_ai_api(app, store=store, commands=FakeCommands(store), hub=EventHub(),
                         builtin_tokens=services.builtin_tokens)
            client = TestClient(TestServer(app))
            await client.start_server()
            nodes.append((services, client, FakeSeats()))
        # Both nodes start, then each runs its periodic directory check.
        for _ in range(2):
            for services, _, seats in nodes:
                await services.seat_builtin(seats)
        for _, client, seats in nodes:
            token = seats.tokens["receptionist"]
            async with client.post(f"{API_PREFIX}/calls/{call.id}/transcript",
                                   json={"speaker": "ai", "text": "hello"},
                                   headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 201, await resp.text()
        # A node's token is its own: the other node's API does not know it.
        (_, client_a, _), (_, _, seats_b) = nodes
        async with client_a.post(f"{API_PREFIX}/calls/{call.id}/transcript",
                                 json={"speaker": "ai", "text": "hello"},
                                 headers={"Authorization":
                                          f"Bearer {seats_b.tokens['receptionist']}"}) as resp:
            assert resp.status == 401
        # Switched away from the built-in engine: its tokens stop working.
        async with shared.transaction() as tx:
            await tx.assistants.set_engine(assistant.id, EngineKind.AUDIOSOCKET, "127.0.0.1:9")
        services, _, seats = nodes[0]
        await services.seat_builtin(seats)
        assert seats.tokens == {} and services.builtin_tokens == {}
    finally:
        for _, client, _ in nodes:
            await client.close()
        await engine.dispose()
