"""The AI engine control API (``/api/ai/v1``): how an AI engine works a call.

An engine's audio reaches the call bridge over AudioSocket; everything else goes
through here: transcript lines, "a person, please", "hang up", and an events WebSocket
that says when a call started, went to a person, came back, or ended. The contract is
``web/openapi/ai_control.json``; request bodies and path parameters are validated
against that very file, so the document an engine author reads and the server that
answers cannot drift apart.

Tokens: one random token per assistant; only its SHA-256 is stored
(``assistants.control_token_hash``). A plain digest is enough because the token is 32
random bytes, not a password: there is no dictionary to guess from, so a slow salted
hash would buy nothing, and a digest lets us compare with every stored hash in
constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSCloseCode, web
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from handoff.calls import CALL_LIFECYCLE, CallEvent, CallState, Speaker
from handoff.events import (
    CALLS_TOPIC,
    CallChanged,
    Event,
    EventHub,
    EventType,
    Overflow,
    Ready,
    Subscription,
    TranscriptLine,
    assistant_topic,
    call_topic,
)
from handoff.live import CallStateConflict
from handoff.states import InvalidTransition
from handoff.store import NotFound, Store, Transaction
from handoff.store.models import Assistant, Call

log = logging.getLogger(__name__)

API_PREFIX = "/api/ai/v1"
SPEC_PATH = Path(__file__).parent / "openapi" / "ai_control.json"
MAX_BODY_BYTES = 64 * 1024
# The engine has nothing to send on the events socket; a small cap keeps a misbehaving
# one from making us buffer megabytes.
WS_MAX_INCOMING_BYTES = 64 * 1024
# Pings keep NAT and proxies from dropping an idle socket between calls, and tell us
# when an engine vanished without closing.
WS_HEARTBEAT_S = 20.0
_SPEC_URI = "urn:switchboard:ai-control"
_MAX_MESSAGE = 300

# Why a command is refused in a call state, in the engine author's terms.
_STATE_REASONS = {
    CallState.NEW: "the call is still being set up; wait for call_started",
    CallState.HANDOFF_PENDING: "a handoff is already open for this call",
    CallState.WITH_AGENT: "a person has the call; the AI is not on it",
    CallState.FORWARDED: "the call was forwarded to the fallback number",
    CallState.ENDED: "the call has ended",
}
# The AI may hang up while it is on the call: alone with the caller, or while a handoff
# is still on offer (the caller still hears it then).
_AI_ON_CALL = frozenset({CallState.WITH_AI, CallState.HANDOFF_PENDING})


def new_control_token() -> str:
    """A fresh assistant token: shown once to the admin, only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_control_token(token: str) -> str:
    """What ``assistants.control_token_hash`` holds for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


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


# ---- errors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    message: str


class ApiError(Exception):
    """A refusal with its HTTP status; the middleware turns it into the Error schema."""

    def __init__(
        self,
        status: int,
        error: str,
        details: Iterable[Problem] = (),
        *,
        state: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = list(details)
        self.state = state
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error}
        if self.details:
            body["details"] = [{"path": p.path, "message": p.message} for p in self.details]
        if self.state is not None:
            body["state"] = self.state
        return web.json_response(body, status=self.status, headers=self.headers)


# ---- the contract ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation of the OpenAPI file, ready to check requests against."""

    operation_id: str
    parameters: Mapping[str, Any]  # path parameter name -> validator
    body: Any | None  # validator of the JSON body, if the operation takes one
    body_required: bool


class ControlApiSpec:
    """The OpenAPI description, loaded once, with a JSON Schema validator per operation.

    OpenAPI 3.1 schemas are JSON Schema 2020-12. Each validator starts from a ``$ref``
    to the schema's place inside the whole document, so the document's own
    ``#/components/...`` references resolve exactly as a reader of the file expects.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, DRAFT202012.create_resource(dict(document))
        )
        self.operations: dict[str, Operation] = {}
        for path, item in document["paths"].items():
            for method, op in item.items():
                pointer = f"/paths/{_escape(path)}/{method}"
                self.operations[op["operationId"]] = self._operation(op, pointer)

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> ControlApiSpec:
        return cls(json.loads(path.read_text()))

    def _operation(self, op: Mapping[str, Any], pointer: str) -> Operation:
        parameters: dict[str, Any] = {}
        for index, ref in enumerate(op.get("parameters", [])):
            param, where = self._deref(ref, f"{pointer}/parameters/{index}")
            if param.get("in") == "path":
                parameters[param["name"]] = self._validator(f"{where}/schema")
        body = None
        required = False
        if "requestBody" in op:
            request_body, where = self._deref(op["requestBody"], f"{pointer}/requestBody")
            body = self._validator(f"{where}/content/application~1json/schema")
            required = bool(request_body.get("required", False))
        return Operation(op["operationId"], parameters, body, required)

    def _deref(self, obj: Mapping[str, Any], pointer: str) -> tuple[Mapping[str, Any], str]:
        """Follow an OpenAPI-level ``$ref`` (parameters, request bodies) within the file."""
        while "$ref" in obj:
            pointer = str(obj["$ref"]).removeprefix("#")
            obj = self.document
            for part in pointer.strip("/").split("/"):
                obj = obj[part.replace("~1", "/").replace("~0", "~")]
        return obj, pointer

    def _validator(self, pointer: str) -> Any:
        return Draft202012Validator(
            {"$ref": f"{_SPEC_URI}#{pointer}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def check_path(self, operation_id: str, values: Mapping[str, str]) -> None:
        op = self.operations[operation_id]
        problems = [
            problem
            for name, validator in op.parameters.items()
            for problem in _problems(validator, values.get(name), f"path.{name}")
        ]
        if problems:
            raise ApiError(400, "invalid path parameter", problems)

    def check_body(self, operation_id: str, body: bytes) -> dict[str, Any]:
        """The parsed body, or ApiError 400 saying what is wrong with it."""
        op = self.operations[operation_id]
        if not body.strip():
            if op.body_required:
                raise ApiError(400, "a JSON body is required",
                               [Problem("body", "the body is empty")])
            return {}
        try:
            value = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "the body is not JSON", [Problem("body", str(exc))]) from None
        if op.body is None:
            raise ApiError(400, "this operation takes no body",
                           [Problem("body", "send no body")])
        problems = _problems(op.body, value, "body")
        if problems:
            raise ApiError(400, "the body does not match the API description", problems)
        assert isinstance(value, dict)  # every request schema is an object
        return value


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _problems(validator: Any, instance: object, root: str) -> list[Problem]:
    found: dict[tuple[str, str], None] = {}
    for error in validator.iter_errors(instance):
        for problem in _explain(error, root):
            found[(problem.path, problem.message)] = None
    return sorted((Problem(path, message) for path, message in found), key=lambda p: p.path)


def _explain(error: Any, root: str) -> list[Problem]:
    """jsonschema's messages, pointed at the offending field and kept short.

    Its own text repeats the whole offending value, which for a 5000-character
    transcript line would drown the one useful word ("too long").
    """
    path = _path(root, error.absolute_path)
    keyword, expected = error.validator, error.validator_value
    instance = error.instance
    if keyword == "required" and isinstance(instance, dict):
        return [Problem(_path(root, [*error.absolute_path, name]), "is required")
                for name in expected if name not in instance]
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        return [Problem(_path(root, [*error.absolute_path, name]),
                        f"is not allowed here (allowed: {', '.join(allowed)})")
                for name in sorted(instance) if name not in allowed]
    if keyword == "maxLength" and isinstance(instance, str):
        message = f"is {len(instance)} characters long; at most {expected} are allowed"
    elif keyword == "minLength" and isinstance(instance, str):
        message = f"must be at least {expected} character{'s' if expected != 1 else ''} long"
    elif keyword == "enum":
        message = f"must be one of {', '.join(map(str, expected))}"
    else:
        message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return [Problem(path, message)]


def _path(root: str, parts: Iterable[object]) -> str:
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


# ---- state -----------------------------------------------------------------------------------


@dataclass
class AiApi:
    store: Store
    commands: CallCommands
    hub: EventHub
    spec: ControlApiSpec
    # Open event sockets, closed on shutdown so a restart does not wait for heartbeats.
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)


AI_API = web.AppKey("ai_api", AiApi)


def setup_ai_api(
    app: web.Application,
    *,
    store: Store,
    commands: CallCommands,
    hub: EventHub,
    spec: ControlApiSpec | None = None,
) -> None:
    """Mount the control API under ``/api/ai/v1`` on ``app`` (a sub-application, so its
    JSON error handling never touches the dashboard's pages)."""
    api = web.Application(middlewares=[_errors_as_json])
    api[AI_API] = AiApi(store, commands, hub, spec or ControlApiSpec.load())
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


# ---- requests --------------------------------------------------------------------------------


async def _assistant(request: web.Request) -> Assistant:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="switchboard-ai"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "send the assistant's token: Authorization: Bearer <token>",
                       headers=challenge)
    digest = hash_control_token(token.strip()).encode()
    async with request.app[AI_API].store.transaction() as tx:
        assistants = await tx.assistants.all()
    found = None
    # Every stored hash is compared, match or not, so the time taken says nothing about
    # which assistant (if any) came close.
    for assistant in assistants:
        if hmac.compare_digest(assistant.control_token_hash.encode(), digest):
            found = assistant
    if found is None:
        raise ApiError(401, "the token is not valid", headers=challenge)
    return found


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    # Chunked uploads carry no length: count as we read and stop at the limit.
    while chunk := await request.content.read(MAX_BODY_BYTES + 1):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


@dataclass(frozen=True)
class CallRequest:
    assistant: Assistant
    call: Call
    body: dict[str, Any]


async def _call_request(request: web.Request, operation_id: str) -> CallRequest:
    """Authenticate, validate, and find the caller's call of this assistant.

    A call of another assistant is answered exactly like a call that does not exist,
    so a token never learns which call ids are live elsewhere.
    """
    assistant = await _assistant(request)
    api = request.app[AI_API]
    call_id = request.match_info["call_id"]
    api.spec.check_path(operation_id, {"call_id": call_id})
    body = api.spec.check_body(operation_id, await _read_body(request))
    async with api.store.transaction() as tx:
        try:
            call = await tx.calls.get(call_id)
        except NotFound:
            call = None
    if call is None or call.assistant_id != assistant.id:
        raise ApiError(404, f"no call {call_id}")
    return CallRequest(assistant, call, body)


def _refuse(call: Call, action: str) -> ApiError:
    why = _STATE_REASONS.get(call.state, f"the call is {call.state.value}")
    return ApiError(409, f"cannot {action}: {why}", state=call.state.value)


async def post_transcript(request: web.Request) -> web.Response:
    req = await _call_request(request, "postTranscript")
    if req.call.state is CallState.ENDED:
        raise _refuse(req.call, "add to the transcript")
    api = request.app[AI_API]
    async with api.store.transaction() as tx:
        segment = await tx.transcripts.append(
            req.call.id, Speaker(req.body["speaker"]), req.body["text"]
        )
    at = segment.at.isoformat()
    # The call panel shows the transcript live while the AI talks.
    api.hub.publish(call_topic(req.call.id),
                    TranscriptLine(req.call.id, segment.speaker.value, segment.text, at))
    api.hub.publish(CALLS_TOPIC, CallChanged(req.call.id))
    return web.json_response({"id": segment.id, "at": at}, status=201)


async def request_handoff(request: web.Request) -> web.Response:
    req = await _call_request(request, "requestHandoff")
    if not CALL_LIFECYCLE.allows(req.call.state, CallEvent.REQUEST_HANDOFF):
        raise _refuse(req.call, "request a handoff")
    api = request.app[AI_API]
    body = req.body
    try:
        handoff_id = await api.commands.request_handoff(
            req.call.id, reason=body["reason"], summary=body["summary"],
            topic=body.get("topic"), priority=body.get("priority", "normal"),
        )
    except (NotFound, InvalidTransition, CallStateConflict):
        # The call moved on between our check and the controller's lock (it ended, or
        # a second request won): answer from what the store says now.
        raise _refuse(await _current(api.store, req.call.id), "request a handoff") from None
    async with api.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    log.info("call=%s handoff=%s requested by assistant %s (%s)",
             req.call.id, handoff_id, req.assistant.name, body["reason"])
    return web.json_response({"handoff_id": handoff_id, "state": handoff.state.value},
                             status=202)


async def end_call(request: web.Request) -> web.Response:
    req = await _call_request(request, "endCall")
    if req.call.state not in _AI_ON_CALL:
        raise _refuse(req.call, "end the call")
    api = request.app[AI_API]
    reason = req.body.get("reason")
    if reason:
        async with api.store.transaction() as tx:
            await tx.transcripts.append(req.call.id, Speaker.SYSTEM,
                                        f"The AI ended the call: {reason}")
    try:
        await api.commands.end_call(req.call.id)
    except NotFound:
        raise _refuse(await _current(api.store, req.call.id), "end the call") from None
    log.info("call=%s ended by assistant %s", req.call.id, req.assistant.name)
    return web.json_response({"call_id": req.call.id}, status=202)


async def _current(store: Store, call_id: str) -> Call:
    async with store.transaction() as tx:
        return await tx.calls.get(call_id)


# ---- events ----------------------------------------------------------------------------------


async def events(request: web.Request) -> web.WebSocketResponse:
    assistant = await _assistant(request)
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
        tasks = [
            asyncio.create_task(_forward(sub, ws, api.store), name=f"ai events {assistant.name}"),
            asyncio.create_task(_drain(ws), name=f"ai events reader {assistant.name}"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("assistant %s: events stream failed", assistant.name,
                          exc_info=task.exception())
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"server error")
    await ws.close()
    log.info("assistant %s: events stream closed", assistant.name)
    return ws


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

