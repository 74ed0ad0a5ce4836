"""Small, direct ARI helpers for tests: a listener for one app's events and leak checks.

They talk to Asterisk over plain aiohttp on purpose, so that a test of the product's
own ARI client never depends on that client to observe what happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pbx.runtime import AsteriskInstance, basic_auth_header
from tests.bench.rig import Pair

__all__ = ["Pair"]


def _headers(instance: AsteriskInstance) -> dict[str, str]:
    return basic_auth_header(*instance.ari_auth)


async def ari(instance: AsteriskInstance, method: str, path: str, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=_headers(instance)) as session,
        session.request(method, f"{instance.ari_url}{path}", params=params) as resp,
    ):
        body = await resp.text()
        try:
            return resp.status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return resp.status, body


async def add_to_bridge(instance: AsteriskInstance, bridge_id: str, channel: str,
                        within: float = 2.0) -> None:
    """addChannel, retried while Asterisk says a leg just created is not in Stasis yet
    (422): an external media leg enters Stasis a moment after its POST returns."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        status, body = await ari(instance, "POST", f"/bridges/{bridge_id}/addChannel",
                                 channel=channel)
        if status == 204:
            return
        assert status == 422 and asyncio.get_running_loop().time() < deadline, (status, body)
        await asyncio.sleep(0.01)


@dataclass
class EventListener:
    """Connects to ``/ari/events`` for one app and keeps every event it receives."""

    instance: AsteriskInstance
    app: str
    events: list[dict[str, Any]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> EventListener:
        self._session = aiohttp.ClientSession(headers=_headers(self.instance))
        url = self.instance.ari_url.replace("http", "ws", 1) + "/events"
        self._ws = await self._session.ws_connect(url, params={"app": self.app})
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))
                self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await self._task
        if self._session is not None:
            await self._session.close()


def of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def match(event: dict[str, Any]) -> bool:
        if event.get("type") != kind:
            return False
        return all(_dig(event, key) == value for key, value in fields.items())

    return match


def _dig(event: dict[str, Any], dotted: str) -> Any:
    value: Any = event
    for part in dotted.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def assert_quiet(instance: AsteriskInstance, settle: float = 5.0) -> None:
    """No channel and no bridge may remain; waits briefly for hang-ups in flight.

    What a failing test left behind is reported, then cleared: the Asterisk instances
    are shared by the session, and one test's leftovers must not fail all the others.
    """
    deadline = asyncio.get_running_loop().time() + settle
    while True:
        _, channels = await ari(instance, "GET", "/channels")
        _, bridges = await ari(instance, "GET", "/bridges")
        if not channels and not bridges:
            return
        if asyncio.get_running_loop().time() > deadline:
            names = [c["name"] for c in channels] + [b["id"] for b in bridges]
            for channel in channels:
                await ari(instance, "DELETE", f"/channels/{channel['id']}")
            for bridge in bridges:
                await ari(instance, "DELETE", f"/bridges/{bridge['id']}")
            raise AssertionError(f"{instance.spec.name} left behind: {names}")
        await asyncio.sleep(0.1)
