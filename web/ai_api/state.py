"""What the AI control API holds while it runs, and what it asks of the call controller."""

from __future__ import annotations

import logging
import weakref
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
    # On a cluster node: the tokens of this process's built-in receptionist, by hash, to
    # the assistant each answers for (web.assistants.seat_builtin). Never stored: each
    # node's receptionist calls its own node's API, and one hash in the shared row
    # could hold only one node's token.
    builtin_tokens: dict[str, str] = field(default_factory=dict)


# Wrong tokens one address may send in a window before it is answered 429.
TOKEN_FAILURES = 20
TOKEN_WINDOW_S = 60.0


AI_API = web.AppKey("ai_api", AiApi)

