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


AI_API = web.AppKey("ai_api", AiApi)

