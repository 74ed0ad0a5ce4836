"""The AI control API on real Asterisk, driven by an engine written the way a third party
would write one: its own AudioSocket listener, the events WebSocket, plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from handoff.assistants import EngineKind
from handoff.calls import CallOutcome, CallState, Speaker
from handoff.handoffs import HandoffState
from pbx.audiosocket import AudioSocketServer, AudioSocketSession
from tests.integration.ai_rig import AiRig, ai_rig
from tests.integration.asterisk_helpers import Pair
from tests.waiting import until
from web.ai_api import hash_control_token, new_control_token
from web.bench.audio import AI_HZ, tone

pytestmark = pytest.mark.integration


class ThirdPartyEngine:
    def __init__(self, api_base: str, token: str) -> None:
        self.api_base = api_base
        self.server = AudioSocketServer(any_stream=self._serve)
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.streams: list[str] = []  # call id of each AudioSocket stream, in order
        self._reader: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return self.server.address

    def expect_call(self, call_id: str) -> None:
        return None  # a third party learns of calls from the events stream

    async def start(self) -> None:
        await self.server.start()
        ws = await self.http.ws_connect(f"{self.api_base}/events")
        self._reader = asyncio.create_task(self._read(ws))
        assert (await self.next_event())["type"] == "ready"

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.server.close()
        await self.http.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async with ws:
            async for message in ws:
                await self.events.put(message.json())

    async def _serve(self, session: AudioSocketSession) -> None:
        self.streams.append(str(session.stream_id))
        speaking = asyncio.create_task(session.play(tone(AI_HZ, 60.0).tobytes()))
        async for _ in session.frames():
            pass
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)

    async def next_event(self, timeout: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def post(self, call_id: str, action: str, body: object = None,
                   token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with self.http.post(f"{self.api_base}/calls/{call_id}/{action}", json=body,
                                  headers=headers) as resp:
            return resp.status, await resp.json()


async def start_engine(api_base: str, token: str) -> ThirdPartyEngine:
    engine = ThirdPartyEngine(api_base, token)
    await engine.start()
    return engine


@pytest_asyncio.fixture
async def desk(quiet_pair: Pair, tmp_path: Path) -> AsyncIterator[AiRig]:
    async with ai_rig(quiet_pair, tmp_path / "switchboard.db", start_engine) as r:
        yield r


def engine_of(r: AiRig) -> ThirdPartyEngine:
    engine = r.ai
    assert isinstance(engine, ThirdPartyEngine)
    return engine


async def test_an_engine_works_a_call_from_start_to_end_through_the_api(desk: AiRig) -> None:
    r, engine = desk, engine_of(desk)
    placed = await r.place_call()
    started = await engine.next_event()
    assert started == {"type": "call_started", "call_id": placed.call_id,
                       "caller": {"number": placed.caller, "name": "Test Caller"},
                       "handoff_level": "balanced", "restricted_topics": [],
                       "out_of_hours": False}
    assert engine.streams == [placed.call_id]  # the AudioSocket stream carries the call id

    status, _ = await engine.post(placed.call_id, "transcript",
                                  {"speaker": "caller", "text": "My bill is wrong."})
    assert status == 201
    status, body = await engine.post(placed.call_id, "handoff", {
        "reason": "ai_cannot_help", "summary": "Disputes a bill.", "topic": "billing",
        "priority": "high",
    })
    assert status == 202 and body["state"] == "offered"
    handoff_id = body["handoff_id"]
    status, body = await engine.post(placed.call_id, "handoff",
                                     {"reason": "caller_asked", "summary": "again"})
    assert status == 409 and body["state"] == "handoff_pending"

    await r.control.accept(handoff_id, r.agent_id)
    assert (await engine.next_event())["type"] == "handoff_connected"
    status, body = await engine.post(placed.call_id, "end")
    assert status == 409 and body["state"] == "with_agent"
    async with r.store.transaction() as tx:  # what the agent desk will write
        await tx.transcripts.append(placed.call_id, Speaker.AGENT, "Refund issued.")

    await r.control.return_to_ai(placed.call_id)
    back = await engine.next_event()
    assert back["type"] == "returned_to_ai"
    assert [(s["speaker"], s["text"]) for s in back["transcript"]] == [
        ("agent", "Refund issued.")
    ]
    await until(lambda: _streams(engine, 2))
    assert engine.streams == [placed.call_id, placed.call_id]  # the AI leg came back

    status, _ = await engine.post(placed.call_id, "end", {"reason": "caller is satisfied"})
    assert status == 202
    assert await engine.next_event() == {"type": "call_ended", "call_id": placed.call_id}
    async with r.store.transaction() as tx:
        call = await tx.calls.get(placed.call_id)
        handoff = await tx.handoffs.get(handoff_id)
        transcript = [(s.speaker, s.text) for s in await tx.transcripts.for_call(call.id)]
    assert call.state is CallState.ENDED and call.outcome is CallOutcome.COMPLETED_BY_AI
    assert handoff.state is HandoffState.RETURNED_TO_AI
    assert (handoff.topic, handoff.summary) == ("billing", "Disputes a bill.")
    assert transcript[0] == (Speaker.CALLER, "My bill is wrong.")
    assert transcript[-1] == (Speaker.SYSTEM, "The AI ended the call: caller is satisfied")


async def test_another_assistants_token_cannot_touch_a_live_call(desk: AiRig) -> None:
    r, engine = desk, engine_of(desk)
    other = new_control_token()
    async with r.store.transaction() as tx:
        await tx.assistants.create(name="sales", numbers=["_21XX"],
                                   engine=EngineKind.AUDIOSOCKET, engine_address="127.0.0.1:9",
                                   control_token_hash=hash_control_token(other))
    placed = await r.place_call()
    for action, body in (("transcript", {"speaker": "ai", "text": "hi"}), ("end", None)):
        status, _ = await engine.post(placed.call_id, action, body, token=other)
        assert status == 404
    assert await r.call_state_is(placed.call_id, CallState.WITH_AI)
    await r.hang_up(placed)


async def _streams(engine: ThirdPartyEngine, count: int) -> bool:
    return len(engine.streams) >= count
