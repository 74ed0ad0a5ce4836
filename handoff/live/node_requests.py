"""A command given on one node's desk for what another node holds, and its answer.

In a cluster only the controller of the node whose Asterisk holds a call can move that
call's legs (each node's ARI listens on its own loopback); the same for an agent's open
line. A person on another node's desk or board still has every command a single box
gives them: their node asks the holding node (:class:`NodeRequest`, a PostgreSQL NOTIFY
through the shared events), which carries it out as if its own dashboard had asked, and
answers (:class:`NodeReply`) with the result (a transfer's handoff id) or with the
refusal its own code raised. The asking node raises that refusal again, as the same
exception, so its desk answers as on one node: 404 because the call just ended, 409
because the colleague is busy.

A NOTIFY sent while a node's link to the database blips is lost, and PostgreSQL never
sends it again. So the asking node sends a request again every Timing.node_resend_s
while no answer has come, and the holding node carries out each request once: a copy
of one under way is dropped, a copy of one answered gets the same answer again (that
answer may be what was lost; a holding node slow to carry it out is still asked again
once it has). With no answer within the bound (Timing.node_reply_s, more for a command
that rings someone's phone) the asker gives up
with :class:`NodeUnanswered`, which the desk answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from handoff.calls import CallState
from handoff.events import NODES_TOPIC, Event, EventHub, EventType, NodeReply, NodeRequest
from handoff.live.errors import (
    AgentNotAvailable,
    AgentUnreachable,
    CallStateConflict,
    NodeUnanswered,
    QueueNotAvailable,
)
from handoff.live.flow import Timing
from handoff.live.lines import LineBackoff, LineRefused
from handoff.store.errors import NotFound

log = logging.getLogger(__name__)

# Request ids carried out here that are remembered, for copies that come late.
_REMEMBERED = 512
# A refusal the asking node cannot rebuild: the holding node failed to carry it out.
_FAILED = "failed"

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
Spawn = Callable[[Coroutine[Any, Any, None], str], object]  # what it returns goes unused


@dataclass(frozen=True)
class _Refusal:
    kind: type[Exception]
    args: Callable[[Any], list[Any]]  # what rebuilds it, as plain JSON values
    build: Callable[..., Exception]


class NodeRequests:
    """This node's requests to the others and its answers to theirs. ``node`` is this
    node's name; ``spawn`` runs the commands asked of it as tracked tasks."""

    def __init__(self, hub: EventHub, node: str, spawn: Spawn, timing: Timing) -> None:
        self.hub = hub
        self.node = node
        self._spawn = spawn
        self.timing = timing
        self._handlers: dict[str, Handler] = {}
        self._refusals: dict[str, _Refusal] = {}
        self._waiting: dict[str, asyncio.Future[Event]] = {}
        # Requests carried out here, by id: None while under way, then the reply sent.
        self._carried: OrderedDict[str, NodeReply | None] = OrderedDict()
        # Subclasses before their base: the first that matches names the refusal.
        self.refuses("not_found", NotFound, lambda e: [e.kind, e.key])
        self.refuses("call_state", CallStateConflict,
                     lambda e: [e.call_id, e.state.value, e.what],
                     lambda call_id, state, what: CallStateConflict(
                         call_id, CallState(state), what))
        self.refuses("agent_not_available", AgentNotAvailable, lambda e: [e.agent_id])
        self.refuses("agent_unreachable", AgentUnreachable, lambda e: [e.agent_id, e.why])
        self.refuses("queue_not_available", QueueNotAvailable, lambda e: [e.queue, e.why])
        self.refuses("line_backoff", LineBackoff, lambda e: [e.agent_id, e.retry_after_s])
        self.refuses("line_refused", LineRefused, lambda e: [str(e)])

    def handle(self, command: str, handler: Handler) -> None:
        """Carry out ``command`` when another node asks (its args as the handler's)."""
        self._handlers[command] = handler

    def refuses(self, name: str, kind: type[Exception], args: Callable[[Any], list[Any]],
                build: Callable[..., Exception] | None = None) -> None:
        """A refusal of ``kind`` met here goes back to the asking node as ``name`` with
        ``args(exc)``, where ``build(*args)`` (the class itself by default) raises it."""
        self._refusals[name] = _Refusal(kind, args, build or kind)

    # ---- asking another node ----------------------------------------------------------------

    async def ask(self, node: str, command: str, args: dict[str, Any], *,
                  ringing_s: float = 0.0) -> Any:
        """``node``'s answer to ``command``: its result, or the refusal it met raised
        here; NodeUnanswered when it did not answer in time (``ringing_s`` more for a
        command that waits for a phone to answer)."""
        within = self.timing.node_reply_s + ringing_s
        request = NodeRequest(node, secrets.token_hex(8), self.node, command, args)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Event] = loop.create_future()
        self._waiting[request.request_id] = answer
        deadline = loop.time() + within
        try:
            sent = 0
            while not answer.done() and (left := deadline - loop.time()) > 0:
                if sent == 1:
                    log.warning("node %s has not answered %s (request %s) yet: sent again "
                                "every %.1f s", node, command, request.request_id,
                                self.timing.node_resend_s)
                self.hub.publish(NODES_TOPIC, request)
                sent += 1
                await asyncio.wait({answer}, timeout=min(left, self.timing.node_resend_s))
        finally:
            self._waiting.pop(request.request_id, None)
        if not answer.done():
            log.warning("node %s did not answer %s (request %s) within %.1f s", node,
                        command, request.request_id, within)
            raise NodeUnanswered(node, f"did not answer within {within:.0f} s")
        reply = answer.result()
        if reply.get("refusal") is not None:
            raise self._rebuilt(node, reply["refusal"])
        return reply.get("result")

    def _rebuilt(self, node: str, refusal: dict[str, Any]) -> Exception:
        known = self._refusals.get(str(refusal.get("kind")))
        args = list(refusal.get("args") or [])
        if known is not None:
            try:
                return known.build(*args)
            except (TypeError, ValueError):
                pass
        return NodeUnanswered(node, f"could not carry it out ({', '.join(map(str, args))})")

    # ---- another node asks -----------------------------------------------------------------

    def heard(self, event: Event) -> None:
        """A request or a reply addressed to this node (from its NODES_TOPIC listener)."""
        request_id = str(event.get("request_id"))
        if event.get("type") == EventType.NODE_REPLY:
            waiting = self._waiting.get(request_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(event)
            return
        if request_id in self._carried:
            reply = self._carried[request_id]
            if reply is not None:
                self.hub.publish(NODES_TOPIC, reply)  # the first one may be what was lost
            return
        self._carried[request_id] = None
        while len(self._carried) > _REMEMBERED:
            self._carried.popitem(last=False)
        self._spawn(self._carry_out(event), f"{event.get('command')} asked by "
                                            f"{event.get('sender')}")

    async def _carry_out(self, event: Event) -> None:
        request_id, command = str(event["request_id"]), str(event.get("command"))
        sender = str(event.get("sender"))
        handler = self._handlers.get(command)
        try:
            if handler is None:
                raise LookupError(f"no command {command!r} here")
            reply = NodeReply(sender, request_id, result=await handler(
                dict(event.get("args") or {})))
        except Exception as exc:
            reply = NodeReply(sender, request_id, refusal=self._refusal_of(exc))
            if reply.refusal is not None and reply.refusal["kind"] == _FAILED:
                log.exception("%s asked by node %s (request %s) failed", command, sender,
                              request_id)
        if request_id in self._carried:
            self._carried[request_id] = reply
        self.hub.publish(NODES_TOPIC, reply)
        log.info("%s asked by node %s (request %s): %s", command, sender, request_id,
                 "done" if reply.refusal is None else reply.refusal["kind"])

    def _refusal_of(self, exc: Exception) -> dict[str, Any]:
        for name, refusal in self._refusals.items():
            if isinstance(exc, refusal.kind):
                return {"kind": name, "args": refusal.args(exc)}
        return {"kind": _FAILED, "args": [f"{type(exc).__name__}: {exc}"]}
