"""The AI engine control API (``/api/ai/v1``): how an AI engine works a call.

An engine's audio reaches the call bridge over AudioSocket; everything else goes
through here: transcript lines, "a person, please", "hang up", and an events WebSocket
that says when a call started, went to a person, came back, or ended. The contract is
``web/openapi/ai_control.json``; request bodies and path parameters are validated
against that very file, so the document an engine author reads and the server that
answers cannot drift apart.

The package: ``contract`` (the OpenAPI file, validation, refusals), ``calls`` (the
commands on a call), ``events`` (the events WebSocket), ``tokens`` (assistant tokens),
``state`` (what the mounted API holds).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import WSCloseCode, web

from handoff.events import EventHub
from handoff.policy import HandoffPolicy
from handoff.store import Store
from web.ai_api.calls import MAX_BODY_BYTES, end_call, post_transcript, request_handoff
from web.ai_api.contract import SPEC_PATH, ApiError, ControlApiSpec, Problem
from web.ai_api.events import events
from web.ai_api.state import AI_API, AiApi, CallCommands
from web.ai_api.tokens import hash_control_token, new_control_token

log = logging.getLogger(__name__)

API_PREFIX = "/api/ai/v1"


def setup_ai_api(
    app: web.Application,
    *,
    store: Store,
    commands: CallCommands,
    hub: EventHub,
    spec: ControlApiSpec | None = None,
    seats: Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """Mount the control API under ``/api/ai/v1`` on ``app`` (a sub-application, so its
    JSON error handling never touches the dashboard's pages)."""
    api = web.Application(middlewares=[_errors_as_json])
    api[AI_API] = AiApi(store, commands, hub, spec or ControlApiSpec.load(),
                        HandoffPolicy(store, commands))
    if seats is not None:
        api[AI_API].seats = seats
    api.router.add_post("/calls/{call_id}/transcript", post_transcript)
    api.router.add_post("/calls/{call_id}/handoff", request_handoff)
    api.router.add_post("/calls/{call_id}/end", end_call)
    api.router.add_get("/events", events)
    api.on_shutdown.append(_close_sockets)
    app.add_subapp(API_PREFIX, api)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        # Unknown routes and wrong methods answer in the same JSON shape as the rest.
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status,
                                 headers={k: v for k, v in exc.headers.items()
                                          if k.lower() == "allow"})


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[AI_API].sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")




__all__ = [
    "API_PREFIX",
    "MAX_BODY_BYTES",
    "SPEC_PATH",
    "ApiError",
    "CallCommands",
    "ControlApiSpec",
    "Problem",
    "hash_control_token",
    "new_control_token",
    "setup_ai_api",
]
