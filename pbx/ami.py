"""A small Asterisk Manager Interface (AMI) client on panoramisk 1.4.

panoramisk parses the protocol; this module owns everything around it:

- the connection is kept up by the same supervised loop as the ARI event stream
  (:class:`pbx.event_link.SupervisedClient`: capped jittered backoff, status, outage
  logged once), with a ping with a deadline to notice a dead Asterisk;
- actions are never replayed after a reconnect: an Originate that may already have run
  must not run twice, so an action in flight when the link drops fails with
  :class:`AmiUnavailable` and the caller reconciles;
- event handlers are async only (panoramisk's sync paths break on Python 3.11), run
  through the same ordered, isolated dispatcher as ARI events instead of panoramisk's
  fire-and-forget ``ensure_future``.

Security events (class ``security``: InvalidPassword, ChallengeResponseFailed,
FailedACL, ...) reach the handlers registered with :meth:`AmiClient.on_security`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Unpack

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from pbx.event_link import ClientOptions, LinkSettings, SupervisedClient, cancel_and_wait

log = logging.getLogger(__name__)

AmiMessage = Mapping[str, Any]
"""An AMI response or event: header names are case-insensitive (``msg["uniqueid"]``)."""

AmiHandler = Callable[[AmiMessage], Awaitable[None]]

_SECURITY = "class:security"

AMI_LINK = LinkSettings(ping_interval=10.0)
"""The AMI login's defaults: as ARI's, but a ping every 10 s."""


class AmiError(Exception):
    """Base of AMI failures."""


class AmiActionRefused(AmiError):
    """Asterisk answered ``Response: Error`` (e.g. "Permission denied" for a class the
    AMI user does not hold)."""

    def __init__(self, action: str, response: AmiMessage) -> None:
        self.action = action
        self.response = response
        self.message = str(response.get("Message", "") or "no message")
        super().__init__(f"AMI {action} refused: {self.message}")


class AmiUnavailable(AmiError):
    """Not connected, or the link dropped before Asterisk answered (the action may or may
    not have run)."""


class AmiLoginFailed(AmiUnavailable):
    """Asterisk refused the AMI user or secret."""


class _Everything:
    """panoramisk replays "non-forgettable" actions after a reconnect; we forget all."""

    def __contains__(self, item: object) -> bool:
        return True


_EOL = "\r\n"
_NOT_A_MESSAGE = "no Event or Response header"
_BODY_RESPONSES = ("Response: Follows", "Response: Fail")  # a command's output follows
# A header line: a name, a colon, then the value (Asterisk writes "Value:" with nothing
# after it for an empty one).
_HEADER = re.compile(r"[^\s:]+:")


class _Protocol(AMIProtocol):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's protocol, but a block that is not an AMI message, or a message with
    lines that are not headers, is counted and logged instead of skipped in silence: a
    proxy or a broken module corrupting the link shows on /metrics (R4). What parses is
    handled as panoramisk would (a Hangup with one bad line is still a Hangup)."""

    factory: _Manager
    version: str | None
    queue: deque[str]

    def data_received(self, data: bytes) -> None:
        text = data.decode("ascii", "ignore")
        if self.version is None and text.startswith("Asterisk Call Manager/"):
            self.version = text.partition(_EOL)[0].partition("/")[2].strip()
        if self.queue:
            text = self.queue.popleft() + text
        blocks = text.split(_EOL + _EOL)
        self.queue.append(blocks.pop(-1))  # the start of a message still arriving
        # strip(): Asterisk sometimes ends a message with one EOL only.
        for block in (b.strip() for b in blocks):
            if not block:
                continue
            message = Message.from_line(block)
            if message is None:
                self.factory.bad_block(block, _NOT_A_MESSAGE)
                continue
            stray = [] if block.startswith(_BODY_RESPONSES) else [
                line for line in block.split(_EOL)
                if not _HEADER.match(line) and not line.startswith("Asterisk Call Manager/")]
            if stray:
                self.factory.bad_block(" / ".join(stray), "lines that are not headers")
            self.handle_message(message)


class _Manager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's Manager with its own reconnect, ping and dispatch handed to us."""

    def __init__(
        self,
        on_lost: Callable[[str], None],
        on_event: Callable[[AmiMessage], None],
        on_bad_block: Callable[[str, str], None],
        **config: Any,
    ) -> None:
        super().__init__(protocol_factory=_Protocol, **config)
        self._on_lost = on_lost
        self._on_event = on_event
        self.bad_block = on_bad_block

    def connection_lost(self, exc: object) -> None:
        # No reconnect timer here (panoramisk's would outlive close()): the supervisor
        # loop reconnects, and closes this manager (and its ping timer) on the way.
        self._connected = False
        self._on_lost(_lost_reason(exc))

    def ping(self) -> None:
        """Replaced by :meth:`AmiClient._ping`, which waits for the answer."""

    def dispatch(self, event: AmiMessage) -> list[str]:
        self._on_event(event)
        return []


def _lost_reason(exc: object) -> str:
    if isinstance(exc, Mapping) and str(exc.get("Event", "")).lower() == "shutdown":
        return f"Asterisk shut down ({exc.get('Shutdown', '')}, restart={exc.get('Restart', '')})"
    return f"connection lost ({exc!r})" if exc else "connection closed by Asterisk"


def ami_event_key(event: AmiMessage) -> str:
    """Order per channel (Uniqueid), like ARI events; everything else in one lane."""
    uniqueid = event.get("Uniqueid")
    return f"channel:{uniqueid}" if uniqueid else "global"


def describe_ami_event(event: AmiMessage) -> str:
    parts = [str(event.get("Event", "?"))]
    for header in ("Channel", "Uniqueid", "RemoteAddress"):
        if event.get(header):
            parts.append(f"{header}={event.get(header)}")
    return " ".join(parts)


class AmiClient(SupervisedClient[AmiMessage]):
    """One AMI login kept up by a supervised loop.

    ``await start()`` (or ``async with``), :meth:`on` / :meth:`on_security` for events,
    :meth:`send_action` for actions, ``await close()``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        key: Callable[[AmiMessage], str] = ami_event_key,
        action_timeout: float = 10.0,
        **options: Unpack[ClientOptions],
    ) -> None:
        # on_connect runs after every login, before ready: re-read state events may have
        # missed. on_disconnect runs when an established login is lost.
        super().__init__("AMI", f"AMI {username}@{host}:{port}", session="AMI session",
                         key=key, describe=describe_ami_event, defaults=AMI_LINK, logger=log,
                         **options)
        self.host = host
        self.port = port
        self._username = username
        self._secret = secret
        self._action_timeout = action_timeout
        self._manager: _Manager | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self._intake: asyncio.Queue[AmiMessage] = asyncio.Queue()
        self._intake_limit = self._settings.queue_size
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._pump_task: asyncio.Task[None] | None = None
        self._login_error: AmiLoginFailed | None = None
        self._login_outcome = asyncio.Condition()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("this AMI client was closed; make a new one")
        if self._supervisor is None:
            self._pump_task = asyncio.create_task(self._pump(), name="AMI events intake")
            self._supervisor = asyncio.create_task(self._supervise(), name="AMI supervisor")

    def _tasks(self) -> list[asyncio.Task[Any]]:
        return [t for t in (self._supervisor, self._pump_task) if t is not None]

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once logged in; :class:`AmiLoginFailed` if Asterisk refused the login."""
        async with asyncio.timeout(timeout), self._login_outcome:
            await self._login_outcome.wait_for(
                lambda: self._link.ready.is_set() or self._login_error is not None
            )
            if not self._link.ready.is_set() and self._login_error is not None:
                raise self._login_error

    async def _settle_login(self, error: AmiLoginFailed | None) -> None:
        self._login_error = error
        if error is None:
            self._link_up()
        async with self._login_outcome:
            self._login_outcome.notify_all()

    # -- events

    def on(self, event: str, handler: AmiHandler) -> AmiHandler:
        """Call ``handler`` for every event named ``event`` (``"*"``: every event)."""
        self._dispatcher.add(event.lower(), handler)
        return handler

    def on_security(self, handler: AmiHandler) -> AmiHandler:
        """Call ``handler`` for every security-class event (failed logins, ACL hits)."""
        self._dispatcher.add(_SECURITY, handler)
        return handler

    def _on_event(self, event: AmiMessage) -> None:
        # panoramisk calls this synchronously from data_received, where we cannot wait.
        # Rather than drop a Hangup, stop reading the socket until the handlers catch
        # up (one read may still carry several events, hence the soft limit).
        self._intake.put_nowait(event)
        if self._intake.qsize() >= self._intake_limit and self._transport is not None:
            if not self._reading_paused:
                log.warning("AMI: %d events waiting; reading paused", self._intake.qsize())
            self._reading_paused = True
            self._transport.pause_reading()

    def _bad_block(self, block: str, why: str) -> None:
        self.stats.bad_frames += 1
        log.warning("AMI: a block with %s (%s): %r", why,
                    "skipped" if why == _NOT_A_MESSAGE else "its headers kept", block[:200])

    async def _pump(self) -> None:
        while True:
            event = await self._intake.get()
            if self._reading_paused and self._intake.qsize() <= self._intake_limit // 2:
                self._reading_paused = False
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.resume_reading()
            kinds = [str(event.get("Event", "")).lower()]
            if "security" in str(event.get("Privilege", "")).lower():
                kinds.append(_SECURITY)
            await self._dispatcher.submit(event, kinds, self._key(event))

    # -- actions

    async def send_action(
        self,
        action: Mapping[str, str | Sequence[str]],
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> list[AmiMessage]:
        """Send one action and return its response followed by any list events.

        With ``check`` (the default) a ``Response: Error`` raises
        :class:`AmiActionRefused`. Nothing is retried: see the module docstring.
        """
        name = str(action.get("Action", "?"))
        manager = self._manager
        if manager is None:
            raise AmiUnavailable(f"AMI {name}: not connected to {self.host}:{self.port}")
        reply = await self._send(manager, dict(action), timeout or self._action_timeout)
        messages: list[AmiMessage] = list(reply) if isinstance(reply, list) else [reply]
        if check and messages and str(messages[0].get("Response", "")).lower() == "error":
            raise AmiActionRefused(name, messages[0])
        return messages

    async def _send(self, manager: _Manager, action: dict[str, Any], timeout: float) -> Any:
        name = action.get("Action", "?")
        future: asyncio.Future[Any] = manager.send_action(action)
        self._inflight.add(future)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise AmiUnavailable(f"AMI {name}: no answer within {timeout:.1f} s") from None
        finally:
            self._inflight.discard(future)

    def _fail_inflight(self, reason: str) -> None:
        for future in self._inflight:
            if not future.done():
                future.set_exception(
                    AmiUnavailable(f"AMI link dropped before the answer ({reason})")
                )
        self._inflight.clear()

    # -- connection

    async def _session_once(self) -> str:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[str] = loop.create_future()

        def on_lost(reason: str) -> None:
            if not lost.done():
                lost.set_result(reason)
            # Fail waiting actions now (the login included), not at their timeouts.
            self._fail_inflight(reason)

        manager = _Manager(
            on_lost,
            self._on_event,
            self._bad_block,
            host=self.host,
            port=self.port,
            loop=loop,
            forgetable_actions=_Everything(),
            log=log,
        )
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                transport, protocol = await loop.create_connection(
                    manager.config["protocol_factory"], self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            return f"cannot connect: {exc or type(exc).__name__}"
        connected: asyncio.Future[Any] = loop.create_future()
        connected.set_result((transport, protocol))
        manager.connection_made(connected)  # panoramisk's own protocol set-up
        self._transport, self._reading_paused = transport, False
        pinger: asyncio.Task[str] | None = None
        try:
            login = {
                "Action": "Login",
                "Username": self._username,
                "Secret": self._secret,
                "Events": "on",
            }
            try:
                reply = await self._send(manager, login, self._action_timeout)
            except AmiUnavailable as exc:
                return str(exc)
            if not reply.success:
                refused = AmiLoginFailed(
                    f"AMI login as {self._username!r} refused: {reply.get('Message', '')}"
                )
                await self._settle_login(refused)
                return str(refused)
            self._manager = manager  # logged in: actions may flow, on_connect's included
            hook_failure = await self._run_connect_hook()
            if hook_failure is not None:
                return hook_failure
            await self._settle_login(None)
            pinger = asyncio.create_task(self._ping(manager), name="AMI pinger")
            done, _ = await asyncio.wait({lost, pinger}, return_when=asyncio.FIRST_COMPLETED)
            return lost.result() if lost in done else pinger.result()
        finally:
            self._manager = self._transport = None
            if pinger is not None:
                await cancel_and_wait([pinger])
            manager.close()
            self._fail_inflight(lost.result() if lost.done() else "link closed by us")

    async def _ping(self, manager: _Manager) -> str:
        # panoramisk's pinger never looks at the reply; a Ping with a deadline is how a
        # silent (black-holed) Asterisk is noticed.
        while True:
            await asyncio.sleep(self._settings.ping_interval)
            try:
                await self._send(manager, {"Action": "Ping"}, self._settings.pong_timeout)
            except AmiUnavailable as exc:
                if self._reading_paused:
                    continue  # we stopped reading, not Asterisk answering
                return f"ping unanswered: {exc}"


__all__ = [
    "AmiActionRefused",
    "AmiClient",
    "AmiError",
    "AmiHandler",
    "AmiLoginFailed",
    "AmiMessage",
    "AmiUnavailable",
    "ami_event_key",
    "describe_ami_event",
]
