"""The ARI client: REST calls and the supervised event WebSocket of one or more Stasis
apps on one Asterisk.

REST calls go through :meth:`AriClient.request`, which turns an HTTP error into a typed
:class:`~pbx.ari.errors.AriError`; the resource groups (:mod:`pbx.ari.resources`) sit on
it. The event stream is one WebSocket to ``/ari/events``, kept up by the supervised loop
of :class:`pbx.event_link.SupervisedClient` (shared with the AMI client); frames become
events handed to the ordered dispatcher.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

import aiohttp

from pbx.ari.errors import AriUnavailable, error_for
from pbx.ari.models import ARI_EVENT_TYPES, Event, EventHandler, describe_event, event_key
from pbx.ari.resources import (
    Applications,
    AsteriskSystem,
    Bridges,
    Channels,
    Endpoints,
    Param,
    Playbacks,
    Recordings,
    _csv,
    _query,
)
from pbx.event_link import ClientOptions, LinkSettings, SupervisedClient, cancel_and_wait

log = logging.getLogger(__name__)

ARI_LINK = LinkSettings()
"""The ARI event stream's defaults (a ping every 5 s)."""


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """ARI takes HTTP basic auth; aiohttp 3.14 deprecates ``auth=``, so send the header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class AriClient(SupervisedClient[Event]):
    """REST calls and the event stream of one or more Stasis apps on one Asterisk.

    Lifecycle: ``await client.start()`` (or ``async with``), register handlers with
    :meth:`on`, ``await client.wait_ready()`` before taking commands, ``await
    client.close()``. REST calls work without the event stream; an empty ``apps``
    opens none.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        apps: str | Sequence[str] = (),
        *,
        key: Callable[[Event], str] = event_key,
        request_timeout: float = 10.0,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.apps: tuple[str, ...] = tuple(a for a in _csv(apps, "apps").split(",") if a)
        super().__init__("ARI", f"ARI events for {','.join(self.apps) or '-'} at {self.base_url}",
                         session="ARI event stream", key=key, describe=describe_event,
                         defaults=ARI_LINK, logger=log, **options)
        self._headers = basic_auth_header(username, password)
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._pong: asyncio.Future[None] | None = None
        self._unknown_seen: set[str] = set()  # event types logged once already

        self.channels = Channels(self)
        self.bridges = Bridges(self)
        self.playbacks = Playbacks(self)
        self.recordings = Recordings(self)
        self.applications = Applications(self)
        self.endpoints = Endpoints(self)
        self.asterisk = AsteriskSystem(self)

    # -- lifecycle

    async def start(self) -> None:
        """Open the HTTP session and, if apps were given, start the event stream."""
        if self._closed:
            raise RuntimeError("this ARI client was closed; make a new one")
        self._http()
        if self.apps and self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="ARI events supervisor")

    async def _release(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once connected and reconciled (on_connect done); TimeoutError otherwise."""
        if self._closed:
            raise RuntimeError("this ARI client was closed")
        async with asyncio.timeout(timeout):
            await self._link.ready.wait()

    # -- events

    def on(self, event_type: str, handler: EventHandler) -> EventHandler:
        """Call ``handler`` for every event of ``event_type`` (``"*"``: every event)."""
        self._dispatcher.add(event_type, handler)
        return handler

    def off(self, event_type: str, handler: EventHandler) -> None:
        self._dispatcher.remove(event_type, handler)

    # -- REST

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Param] | None = None,
        body: Any = None,
    ) -> Any:
        """One ARI call; returns the decoded JSON (None for 204) or raises :class:`AriError`.

        ``params`` go in the query string (None left out), ``body`` is sent as JSON.
        """
        status, reason, raw = await self._exchange(method, path, params, body)
        text = raw.decode(errors="replace")
        data: Any
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = text
        if status >= 400:
            raise error_for(status, method, path, data, reason)
        return data

    async def download(self, path: str) -> bytes:
        """The body of a GET as it came (a stored recording's audio), or an AriError."""
        status, reason, raw = await self._exchange("GET", path, None, None)
        if status >= 400:
            text = raw.decode(errors="replace")
            try:
                data: Any = json.loads(text) if text else None
            except json.JSONDecodeError:
                data = text
            raise error_for(status, "GET", path, data, reason)
        return raw

    async def _exchange(
        self, method: str, path: str, params: Mapping[str, Param] | None, body: Any,
    ) -> tuple[int, str, bytes]:
        if self._closed:
            raise AriUnavailable(0, method, path, "the ARI client is closed")
        try:
            async with self._http().request(
                method, self.base_url + path, params=_query(params or {}), json=body
            ) as resp:
                return resp.status, resp.reason or "", await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AriUnavailable(0, method, path, _explain(exc)) from exc

    # -- the event stream

    async def _session_once(self) -> str:
        url = self.base_url.replace("http", "ws", 1) + "/events"
        params = {"app": ",".join(self.apps), "subscribeAll": "false"}
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                ws = await self._http().ws_connect(
                    url,
                    params=params,
                    # Our own pings: a PONG is how we tell a live Asterisk from a black hole.
                    autoping=False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            return f"handshake refused with HTTP {exc.status} {exc.message}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _explain(exc)
        try:
            # Before ready and before the first frame is read: events of calls the
            # hook reconciles wait in the socket until their state is known.
            hook_failure = await self._run_connect_hook()
            if hook_failure is not None:
                return hook_failure
            self._link_up()
            return await self._pump(ws)
        finally:
            await ws.close()

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        reader = asyncio.create_task(self._read(ws), name="ARI events reader")
        pinger = asyncio.create_task(self._ping(ws), name="ARI events pinger")
        try:
            done, _ = await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([reader, pinger])
        ended = done.pop()
        exc = ended.exception()
        return ended.result() if exc is None else f"internal error: {exc!r}"

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self._on_frame(msg.data)
            elif msg.type is aiohttp.WSMsgType.PONG:
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
            elif msg.type is aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                self._bad_frame(repr(msg.data[:80]), "binary frame")
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return f"socket error: {_explain(ws.exception())}"
            else:  # CLOSE, CLOSING, CLOSED
                return f"closed by Asterisk (code {ws.close_code})"

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        # TCP alone can take minutes to notice a dead peer (no RST through a black hole);
        # an unanswered ping within pong_timeout is the signal to reconnect.
        loop = asyncio.get_running_loop()
        interval, pong_timeout = self._settings.ping_interval, self._settings.pong_timeout
        while True:
            await asyncio.sleep(interval)
            self._pong = loop.create_future()
            try:
                await ws.ping(b"switchboard")
            except (aiohttp.ClientError, ConnectionError) as exc:
                return f"ping failed: {_explain(exc)}"
            try:
                async with asyncio.timeout(pong_timeout):
                    await self._pong
            except TimeoutError:
                if self._dispatcher.backpressured:
                    continue  # we stopped reading, not Asterisk answering
                return f"no pong within {pong_timeout:.1f} s (Asterisk or network dead)"

    async def _on_frame(self, data: str) -> None:
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            self._bad_frame(data[:200], "not JSON")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._bad_frame(data[:200], "not an event object")
            return
        kind = event["type"]
        if kind not in ARI_EVENT_TYPES:
            self.stats.unknown_events += 1
            if kind not in self._unknown_seen and len(self._unknown_seen) < 100:
                self._unknown_seen.add(kind)
                log.warning("ARI events: a type ARI does not define, passed on (logged once "
                            "per type): %s", data[:200])
        await self._dispatcher.submit(event, (kind,), self._key(event))

    def _bad_frame(self, sample: str, why: str) -> None:
        self.stats.bad_frames += 1
        log.warning("ARI events: skipped a frame (%s): %s", why, sample)


def _explain(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
