"""The AI control API served on its own, as the unit tests drive it: a real SQLite store
with two assistants (receptionist at 2000, sales at _21XX), each with its token, and a
fake call controller that does to the store what CallControl does, without Asterisk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from handoff.assistants import EngineKind
from handoff.calls import CallEvent
from handoff.events import EventHub
from handoff.handoffs import HandoffEvent
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.store_fixtures import FakeClock
from web.ai_api import API_PREFIX, hash_control_token, new_control_token, setup_ai_api

RECEPTIONIST_TOKEN = new_control_token()
SALES_TOKEN = new_control_token()
AUTH = {"Authorization": f"Bearer {RECEPTIONIST_TOKEN}"}


@dataclass
class FakeCommands:
    """Does to the store what CallControl does, without Asterisk."""

    store: Store
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    async def request_handoff(
        self, call_id: str, *, reason: str, summary: str, topic: str | None = None,
        priority: str = "normal",
    ) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        self.handoffs.append({"call_id": call_id, "reason": reason, "summary": summary,
                              "topic": topic, "priority": priority})
        async with self.store.transaction() as tx:
            handoff = await tx.handoffs.request(call_id, reason=reason, summary=summary,
                                                topic=topic)
            await tx.calls.apply(call_id, CallEvent.REQUEST_HANDOFF)
            await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)
        return handoff.id

    async def end_call(self, call_id: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.ended.append(call_id)


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    store: Store
    commands: FakeCommands
    hub: EventHub
    clock: FakeClock
    assistants: dict[str, int]

    async def new_call(self, assistant: str = "receptionist",
                       *events: CallEvent) -> str:
        async with self.store.transaction() as tx:
            call = await tx.calls.create(caller_number="+15550100", caller_channel_id="c.1",
                                         assistant_id=self.assistants[assistant])
            for event in (CallEvent.ANSWER, *events):
                await tx.calls.apply(call.id, event)
        return call.id

    async def post(self, call_id: str, action: str, body: object = None, *,
                   headers: dict[str, str] | None = None, data: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with self.client.post(f"{API_PREFIX}/calls/{call_id}/{action}",
                                    headers=AUTH if headers is None else headers,
                                    **kwargs) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    engine = create_store_engine(f"sqlite:///{tmp_path}/switchboard.db")
    await upgrade_to_head(engine)
    clock = FakeClock()
    store = Store(engine, clock)
    async with store.transaction() as tx:
        ids = {
            name: (await tx.assistants.create(
                name=name, numbers=[number], engine=EngineKind.AUDIOSOCKET,
                engine_address="127.0.0.1:9",
                control_token_hash=hash_control_token(token),
            )).id
            for name, number, token in (("receptionist", "2000", RECEPTIONIST_TOKEN),
                                        ("sales", "_21XX", SALES_TOKEN))
        }
    commands, hub = FakeCommands(store), EventHub()
    app = web.Application()
    setup_ai_api(app, store=store, commands=commands, hub=hub)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Api(client, store, commands, hub, clock, ids)
    finally:
        await client.close()
        await engine.dispose()
