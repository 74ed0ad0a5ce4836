"""The calls an engine works: transcript lines, "a person, please", "hang up".

Every request names a call of the token's own assistant; a call of another assistant is
answered exactly like a call that does not exist.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from handoff.assistants import EngineKind
from handoff.calls import CALL_LIFECYCLE, CallEvent, CallState, Speaker
from handoff.events import TranscriptLine, publish_transcript_line
from handoff.live import CallStateConflict, OutOfHours
from handoff.policy import HandoffRefused, Refusal
from handoff.states import InvalidTransition
from handoff.store import NotFound, Store
from handoff.store.models import Assistant, Call
from web.ai_api.contract import ApiError
from web.ai_api.state import AI_API
from web.ai_api.tokens import hash_control_token
from web.ratelimit import address_key

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

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



# ---- requests --------------------------------------------------------------------------------


async def assistant_of(request: web.Request) -> Assistant:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="switchboard-ai"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "send the assistant's token: Authorization: Bearer <token>",
                       headers=challenge)
    api = request.app[AI_API]
    address = address_key(request.remote)
    digest = hash_control_token(token.strip())
    retry_after = api.throttle.retry_after(address)
    if retry_after is not None and digest not in api.known_good:
        # Refused before the store is read: a flood of wrong tokens costs us nothing.
        raise ApiError(429, f"too many wrong tokens from this address; retry in {retry_after} s",
                       headers={"Retry-After": str(retry_after)})
    async with api.store.transaction() as tx:
        assistants = await tx.assistants.all()
    found = None
    seats = {name: hash_control_token(held) for name, held in api.seats().items()}
    # Every stored hash is compared, match or not, so the time taken says nothing about
    # which assistant (if any) came close. An assistant on the built-in engine is also
    # answered with the token this process's receptionist holds for it (never stored).
    for assistant in assistants:
        # A removed assistant's token is refused; a disabled one's still works for the
        # calls it has up.
        seat = seats.get(assistant.name, "") if assistant.engine is EngineKind.BUILTIN else ""
        stored = hmac.compare_digest(assistant.control_token_hash.encode(), digest.encode())
        seated = hmac.compare_digest(seat.encode(), digest.encode())
        if (stored or seated) and assistant.removed_at is None:
            found = assistant
    api.known_good = {a.control_token_hash for a in assistants if a.removed_at is None}
    api.known_good |= set(seats.values())
    if found is None:
        api.throttle.failed(address)
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
    assistant = await assistant_of(request)
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
    # The call panel and the supervisor board show the transcript live while the AI talks.
    publish_transcript_line(api.hub, TranscriptLine(req.call.id, segment.speaker.value,
                                                    segment.text, at))
    out: dict[str, Any] = {"id": segment.id, "at": at}
    if segment.speaker is Speaker.CALLER:
        # What the caller says is the server's to judge too: a restricted topic brings a
        # person whatever the assistant's level and whatever its engine makes of it.
        forced = await api.policy.caller_said(req.assistant, req.call.id, segment.text)
        if forced is not None:
            out["restricted_topic"] = {"topic": forced.hit.topic,
                                       "handoff_id": forced.handoff_id}
    return web.json_response(out, status=201)


async def request_handoff(request: web.Request) -> web.Response:
    req = await _call_request(request, "requestHandoff")
    if not CALL_LIFECYCLE.allows(req.call.state, CallEvent.REQUEST_HANDOFF):
        raise _refuse(req.call, "request a handoff")
    api = request.app[AI_API]
    body = req.body
    try:
        handoff_id = await api.policy.engine_asks(
            req.assistant, req.call.id, reason=body["reason"], summary=body["summary"],
            topic=body.get("topic"), priority=body.get("priority", "normal"),
            problem=body.get("problem"),
        )
    except HandoffRefused as exc:
        log.info("call=%s: handoff refused to assistant %s (%s, level %s)",
                 req.call.id, req.assistant.name, exc.code.value, exc.level.value)
        raise ApiError(422, f"no handoff: {exc.message}", code=exc.code.value,
                       extra={"handoff_level": exc.level.value}) from None
    except OutOfHours:
        raise ApiError(422, "no handoff: the assistant is out of its business hours, so "
                       "nobody can take the call; its fallback applies instead (its number "
                       "rings, or a call-back is noted): tell the caller",
                       code=Refusal.OUT_OF_HOURS.value,
                       extra={"handoff_level": req.assistant.handoff_level.value}) from None
    except (NotFound, InvalidTransition, CallStateConflict):
        # The call moved on between our check and the controller's lock (it ended, or
        # a second request won): answer from what the store says now.
        raise _refuse(await _current(api.store, req.call.id), "request a handoff") from None
    async with api.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    log.info("call=%s handoff=%s requested by assistant %s (%s)",
             req.call.id, handoff_id, req.assistant.name, handoff.reason)
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


