"""Switchboard with its AI control API served over HTTP, and an AI engine of the test's
choosing, on real Asterisk instances.

The bench rig (:mod:`web.bench.rig`) wires CallControl to an engine that takes any
stream and never talks back; here the engine is a real client of the control API (the
reference receptionist, or a test's own), so the API runs on 127.0.0.1 like in
production and the engine is built once its address is known.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web
from aiohttp.test_utils import TestServer

from handoff.agents import EndpointKind
from handoff.assistants import EngineKind
from handoff.calls import CallState
from handoff.controller import build_controller
from handoff.events import EventHub
from handoff.live import AiEngine, Timing, call_key
from handoff.store import Store, create_store_engine, upgrade_to_head
from pbx.ari import AriClient
from tests.waiting import until
from web.ai_api import API_PREFIX, hash_control_token, new_control_token, setup_ai_api
from web.bench.rig import Pair, PlacedCall, Rig
from web.bench.world import local_world

ASSISTANT = "receptionist"  # the assistant the test PBX routes 2000 to


class StartedEngine(AiEngine, Protocol):
    async def close(self) -> None: ...


EngineMaker = Callable[[str, str], Awaitable[StartedEngine]]


@dataclass
class AiRig(Rig):
    hub: EventHub
    api_base: str
    token: str
    ai: StartedEngine  # the engine the receptionist's number is answered by

    async def press(self, placed: PlacedCall, digits: str) -> None:
        """The caller presses keys on their phone (RFC 4733 over the trunk)."""
        # The carrier's outbound leg is the caller's phone; World keeps it by number.
        channel = self.world._outbound[placed.caller]
        await self.world.ari.channels.send_dtmf(channel, digits, duration=120)

    async def hang_up(self, placed: PlacedCall) -> None:
        await self.hang_up_caller(placed)
        await until(lambda: self.call_state_is(placed.call_id, CallState.ENDED))

    async def call_state_is(self, call_id: str, state: CallState) -> bool:
        async with self.store.transaction() as tx:
            return (await tx.calls.get(call_id)).state is state

    async def transcript(self, call_id: str) -> list[tuple[str, str]]:
        async with self.store.transaction() as tx:
            return [(s.speaker.value, s.text) for s in await tx.transcripts.for_call(call_id)]


@contextlib.asynccontextmanager
async def ai_rig(
    pair: Pair,
    db_path: Path,
    make_engine: EngineMaker,
    timing: Timing | None = None,
    *,
    accept_timeout_s: int = 30,
    agent_on_duty: bool = True,
) -> AsyncIterator[AiRig]:
    """``make_engine(api_base, token)`` returns a started engine for the receptionist."""
    engine = create_store_engine(f"sqlite:///{db_path}")
    await upgrade_to_head(engine)
    store = Store(engine)
    token = new_control_token()
    async with store.transaction() as tx:
        # Pointed at the engine once it listens (below); its token works from now on.
        assistant = await tx.assistants.create(
            name=ASSISTANT, numbers=["2000"], engine=EngineKind.AUDIOSOCKET,
            engine_address="127.0.0.1:1", accept_timeout_s=accept_timeout_s,
            control_token_hash=hash_control_token(token))
        agent = await tx.agents.create(
            login="ada", display_name="Ada", sip_user="desk-ada",
            sip_password="desk-ada-secret", endpoint_kind=EndpointKind.DESKPHONE,
        )
        # Ada is at her desk: handoffs are offered to her (unless the test says otherwise).
        # On duty from offline is available; off duty is offline.
        await tx.agents.set_duty(agent.id, agent_on_duty)
    hub = EventHub()
    pbx_ari = AriClient(pair.pbx.ari_url, *pair.pbx.ari_auth, apps="switchboard", key=call_key)
    live = build_controller(pbx_ari, store, hub, timing=timing)
    control = live.control
    app = web.Application()
    setup_ai_api(app, store=store, commands=control, hub=hub)
    server = TestServer(app, host="127.0.0.1")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        await server.start_server()
        stack.push_async_callback(server.close)
        world = await stack.enter_async_context(local_world(pair.carrier))
        api_base = str(server.make_url(API_PREFIX))
        ai = await make_engine(api_base, token)
        stack.push_async_callback(ai.close)
        async with store.transaction() as tx:
            await tx.assistants.set_engine(assistant.id, EngineKind.AUDIOSOCKET, ai.address)
        stack.push_async_callback(pbx_ari.close)
        stack.push_async_callback(live.close)
        await pbx_ari.start()
        await pbx_ari.wait_ready(10)
        yield AiRig(pair.pbx, control, store, pbx_ari, world, agent.id, hub, api_base, token,
                    ai, live=live)
