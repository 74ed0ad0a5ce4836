"""The events WebSocket: ``ready`` (the live calls), then what happens to this
assistant's calls, as the engine needs it."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, web

from handoff.events import (
    Event,
    EventType,
    Overflow,
    Ready,
    Subscription,
    assistant_topic,
)
from handoff.store import Store, Transaction
from handoff.store.models import Assistant
from web.ai_api.calls import assistant_of
from web.ai_api.state import AI_API

log = logging.getLogger(__name__)

# The engine has nothing to send on the events socket; a small cap keeps a misbehaving
# one from making us buffer megabytes.
WS_MAX_INCOMING_BYTES = 64 * 1024
# Pings keep NAT and proxies from dropping an idle socket between calls, and tell us
# when an engine vanished without closing.
WS_HEARTBEAT_S = 20.0
# How often an open events socket checks that its token is still the assistant's: a
# rotated token (from the admin page, or the CLI in another process) or a removed
# assistant closes it within this long.
TOKEN_CHECK_S = 1.0
# The close code an engine sees then (the 4000s are the application's own).
TOKEN_REVOKED = 4001


# ---- events ----------------------------------------------------------------------------------


async def events(request: web.Request) -> web.WebSocketResponse:
    assistant = await assistant_of(request)
    api = request.app[AI_API]
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=WS_MAX_INCOMING_BYTES)
    await ws.prepare(request)
    api.sockets.add(ws)
    log.info("assistant %s: events stream open", assistant.name)
    # Subscribe before taking the snapshot: a call that starts in between shows up twice
    # (harmless for the engine) rather than not at all.
    async with api.hub.subscribe(assistant_topic(assistant.name)) as sub:
        calls = await _live_calls(api.store, assistant.id)
        await ws.send_json(Ready(assistant.name, calls).to_dict())
        watch = asyncio.create_task(_token_revoked(api.store, assistant),
                                    name=f"ai events token {assistant.name}")
        tasks = [
            asyncio.create_task(_forward(sub, ws, api.store), name=f"ai events {assistant.name}"),
            asyncio.create_task(_drain(ws), name=f"ai events reader {assistant.name}"),
            watch,
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if watch in done and not watch.cancelled() and watch.exception() is None:
            log.warning("assistant %s: events stream closed, its token was replaced or the "
                        "assistant removed", assistant.name)
            await ws.close(code=TOKEN_REVOKED, message=b"token revoked")
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("assistant %s: events stream failed", assistant.name,
                          exc_info=task.exception())
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"server error")
    await ws.close()
    log.info("assistant %s: events stream closed", assistant.name)
    return ws


async def _token_revoked(store: Store, assistant: Assistant) -> None:
    """Returns once the token this socket was opened with no longer opens anything."""
    while True:
        await asyncio.sleep(TOKEN_CHECK_S)
        async with store.transaction() as tx:
            now = await tx.assistants.get(assistant.id)
        if now.control_token_hash != assistant.control_token_hash or now.removed_at:
            return


async def _drain(ws: web.WebSocketResponse) -> None:
    """Engines send nothing, but reading is what answers pings and notices the close."""
    async for _ in ws:
        pass


async def _forward(sub: Subscription, ws: web.WebSocketResponse, store: Store) -> None:
    reported = 0
    while True:
        event = await sub.get()
        if sub.dropped > reported:
            reported = sub.dropped
            await ws.send_json(Overflow(reported).to_dict())
        await ws.send_json(await engine_event(store, event))


async def engine_event(store: Store, event: Event) -> Event:
    """A hub event as the engine sees it: no hub topic; a return to the AI carries what
    was said while the person had the call, so the AI can pick up from there."""
    out = {k: v for k, v in event.items() if k != "topic"}
    if out.get("type") == EventType.RETURNED_TO_AI and "transcript" not in out:
        async with store.transaction() as tx:
            out["transcript"] = await human_part(tx, str(out["call_id"]))
    return out


async def human_part(tx: Transaction, call_id: str) -> list[dict[str, str]]:
    """Transcript segments of the latest person's part of the call: from the moment the
    agent's leg connected to the end of that handoff."""
    connected = [h for h in await tx.handoffs.for_call(call_id) if h.connected_at is not None]
    if not connected:
        return []
    last = connected[-1]
    assert last.connected_at is not None
    segments = await tx.transcripts.for_call(call_id, since=last.connected_at)
    return [
        {"speaker": s.speaker.value, "text": s.text, "at": s.at.isoformat()}
        for s in segments
        if last.ended_at is None or s.at <= last.ended_at
    ]


async def _live_calls(store: Store, assistant_id: int) -> list[str]:
    async with store.transaction() as tx:
        return [c.id for c in await tx.calls.open_calls() if c.assistant_id == assistant_id]


