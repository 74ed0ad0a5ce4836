"""What the AI control API holds while it runs, and what it asks of the call controller."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from handoff.events import (
    EventHub,
)
from handoff.policy import HandoffPolicy
from handoff.store import Store
from web.ai_api.contract import ControlApiSpec
from web.ratelimit import LoginThrottle

log = logging.getLogger(__name__)


class CallCommands(Protocol):
    """What the API asks of the live-call controller (CallControl fits as is)."""

    async def request_handoff(
        self,
        call_id: str,
        *,
        reason: str,
        summary: str,
        topic: str | None = None,
        priority: str = "normal",
    ) -> int: ...

    async def end_call(self, call_id: str) -> None: ...



@dataclass
class AiApi:
    store: Store
    commands: CallCommands
    hub: EventHub
    spec: ControlApiSpec
    # The assistant's handoff level and restricted topics, between its engine and
    # the controller.
    policy: HandoffPolicy
    # Open event sockets, closed on shutdown so a restart does not wait for heartbeats.
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)
    # Wrong tokens per address (the HTTP commands and the events socket's handshake):
    # a token is 32 random bytes, so this is not about guessing but about an engine
    # left retrying a stale token in a tight loop, or a flood, each costing a store read.
    throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(
        failures=TOKEN_FAILURES, address_failures=TOKEN_FAILURES, window_s=TOKEN_WINDOW_S))
    # The valid token hashes as of the last store read: a blocked address still reaches
    # the store with one of these, so an engine beside the one retrying a stale token
    # (several engines on one host share its address) keeps working.
    known_good: set[str] = field(default_factory=set)
    # The tokens this process's built-in receptionist holds, by assistant: accepted for
    # assistants on the built-in engine only, and never stored. Each node of a cluster
    # runs its own receptionist on its own calls; with one stored token each node's
    # seating replaced the other's, and its receptionist's requests were refused (401).
    seats: Callable[[], Mapping[str, str]] = field(default=lambda: {})


# Wrong tokens one address may send in a window before it is answered 429.
TOKEN_FAILURES = 20
TOKEN_WINDOW_S = 60.0


AI_API = web.AppKey("ai_api", AiApi)

