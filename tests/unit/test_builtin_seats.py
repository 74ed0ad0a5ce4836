"""The built-in receptionist's token on several nodes sharing one database: each
process's receptionist holds a token of its own, which that process's AI API accepts
for assistants on the built-in engine, and seating stores nothing, so the nodes never
replace each other's token (before, each seating stored its own hash and the other
node's receptionist was refused 401 at its next request)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from handoff.assistants import EngineKind
from handoff.events import EventHub
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.ai_api_fixtures import FakeCommands
from web.ai_api import API_PREFIX, hash_control_token, new_control_token, setup_ai_api
from web.assistants import seat_builtin

UNKNOWN_CALL = "6f1c1f3e-8a55-4d8e-9d3c-3f7b7f6c0e11"


class Seats:
    """A receptionist's seats, as handoff.receptionist keeps them."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    async def serve(self, assistant: str, token: str) -> None:
        self.tokens[assistant] = token

    async def release(self, assistant: str) -> None:
        self.tokens.pop(assistant, None)


async def _status(client: TestClient[web.Request, web.Application], token: str) -> int:
    """401 for a token the API refuses; 404 (an unknown call) for one it accepts."""
    async with client.post(f"{API_PREFIX}/calls/{UNKNOWN_CALL}/transcript",
                           json={"speaker": "ai", "text": "hi"},
                           headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


async def test_two_nodes_receptionists_keep_their_own_tokens_on_one_database(
    tmp_path: Path,
) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path}/switchboard.db")
    await upgrade_to_head(engine)
    store = Store(engine)
    external = new_control_token()
    async with store.transaction() as tx:
        builtin = await tx.assistants.create(
            name="receptionist", numbers=["2000"], engine=EngineKind.BUILTIN,
            engine_address="", control_token_hash=hash_control_token(new_control_token()))
        await tx.assistants.create(
            name="sales", numbers=["_21XX"], engine=EngineKind.AUDIOSOCKET,
            engine_address="127.0.0.1:9", control_token_hash=hash_control_token(external))
    stored = builtin.control_token_hash
    nodes: list[tuple[Seats, TestClient[web.Request, web.Application]]] = []
    try:
        for _ in range(2):
            seats, app = Seats(), web.Application()
            setup_ai_api(app, store=store, commands=FakeCommands(store), hub=EventHub(),
                         seats=lambda s=seats: s.tokens)  # type: ignore[misc]
            client = TestClient(TestServer(app))
            await client.start_server()
            nodes.append((seats, client))
        # Both nodes seat their receptionist, then each seats again (a reload).
        for seats, _ in nodes + nodes:
            await seat_builtin(store, seats)
        (a, client_a), (b, client_b) = nodes
        assert set(a.tokens) == set(b.tokens) == {"receptionist"}
        assert a.tokens["receptionist"] != b.tokens["receptionist"]
        async with store.transaction() as tx:
            assert (await tx.assistants.get(builtin.id)).control_token_hash == stored
        assert await _status(client_a, a.tokens["receptionist"]) == 404
        assert await _status(client_b, b.tokens["receptionist"]) == 404
        # A seat is this process's own: the other node refuses it, and an external
        # engine's token works on every node as before.
        assert await _status(client_b, a.tokens["receptionist"]) == 401
        assert await _status(client_a, external) == await _status(client_b, external) == 404
        # An assistant moved off the built-in engine is no longer answered with a seat.
        async with store.transaction() as tx:
            await tx.assistants.set_engine(builtin.id, EngineKind.AUDIOSOCKET, "127.0.0.1:9")
        assert await _status(client_a, a.tokens["receptionist"]) == 401
    finally:
        for _, client in nodes:
            await client.close()
        await engine.dispose()
