"""Small, direct ARI helpers for tests: a listener for one app's events and leak checks.

They talk to Asterisk over plain aiohttp on purpose, so that a test of the product's
own ARI client never depends on that client to observe what happened.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

import aiohttp

from pbx.ami import AmiClient
from pbx.ari import basic_auth_header
from pbx.runtime import AsteriskInstance
from tests.sip_phone import SipError, SipMessage, _build, _sdp, digest_authorization
from web.bench.rig import Pair

__all__ = ["Pair"]


def process_ids(pid: int) -> dict[str, list[int]]:
    """The real, effective, saved and file-system uids and gids of a running process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: [int(v) for v in line.split()[1:]]
            for line in status if line.startswith(("Uid:", "Gid:"))}


def ami_client(instance: AsteriskInstance, secret: str | None = None, *,
               port: int | None = None, **options: Any) -> AmiClient:
    """The product's AMI client logged in as the instance's controller user (through
    ``port``, a :class:`tests.faults.TcpPath` in front of AMI, when given)."""
    spec = instance.spec
    return AmiClient("127.0.0.1", port or spec.ports.ami, spec.ami_user,
                     spec.ami_secret if secret is None else secret, **options)


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


async def gone(instance: AsteriskInstance, path: str) -> bool:
    """Whether Asterisk no longer knows the channel or bridge at `path` (a hang-up or a
    destroy completes a moment after its request returns)."""
    status, _ = await ari(instance, "GET", path)
    return status == 404


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


class BrowserPhone:
    """A browser softphone's SIP over WebSocket as JsSIP speaks it: REGISTER with digest
    auth (its Contact an ``.invalid`` host, RFC 7118), and 200 to whatever the PBX asks
    while the socket is open (its OPTIONS), but 486 to a call (a stand-in with no media
    to answer it with). Closing it is the tab going away."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.answers: asyncio.Queue[SipMessage] = asyncio.Queue()
        # The requests it was sent, in order (ACKs included).
        self.requests: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def register(cls, session: aiohttp.ClientSession, instance: AsteriskInstance | str,
                       user: str, password: str, ssl: SSLContext | None = None
                       ) -> BrowserPhone:
        """Open the PBX's SIP WebSocket (or the one at the URL ``instance``: the cluster's
        edge) and register; returns once the registrar said 200."""
        url = instance if isinstance(instance, str) else (
            f"ws://127.0.0.1:{instance.spec.ports.http}/ws")
        phone = cls(await session.ws_connect(url, protocols=("sip",),
                                             ssl=ssl if ssl is not None else True))
        registrar, aor, host = "sip:127.0.0.1", f"sip:{user}@127.0.0.1", "browser.invalid"
        call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
        authorization: list[tuple[str, str]] = []
        for cseq in (1, 2):
            branch = f"z9hG4bK{secrets.token_hex(8)}"
            await phone.ws.send_str(_build(f"REGISTER {registrar} SIP/2.0", [
                ("Via", f"SIP/2.0/WS {host};branch={branch}"), ("Max-Forwards", "70"),
                ("From", f"<{aor}>;tag={tag}"), ("To", f"<{aor}>"), ("Call-ID", call_id),
                ("CSeq", f"{cseq} REGISTER"), ("Expires", "120"),
                ("Contact", f"<sip:{user}@{host};transport=ws>"), *authorization]).decode())
            answer = await phone._final_answer(branch)
            if answer.status == 401 and not authorization:
                authorization = [("Authorization", digest_authorization(
                    user, password, answer.all("www-authenticate"), "REGISTER", registrar))]
                continue
            if answer.status != 200:
                await phone.close()
                raise SipError("REGISTER", answer.status)
            break
        return phone

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def _final_answer(self, branch: str) -> SipMessage:
        while True:
            message = await asyncio.wait_for(self.answers.get(), 10)
            if message.branch == branch and message.status >= 200:
                return message

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                continue
            message = SipMessage.parse(
                frame.data.encode() if isinstance(frame.data, str) else frame.data)
            if not message.is_request:
                self.answers.put_nowait(message)
                continue
            self.requests.put_nowait(message)
            method = message.start.split()[0]
            if method == "ACK":
                continue
            to = message.get("to")
            status = "486 Busy Here" if method == "INVITE" else "200 OK"
            await self.ws.send_str(_build(f"SIP/2.0 {status}", [
                *(("Via", via) for via in message.all("via")), ("From", message.get("from")),
                ("To", to if ";tag=" in to else f"{to};tag={secrets.token_hex(4)}"),
                ("Call-ID", message.get("call-id")), ("CSeq", message.get("cseq"))]).decode())


async def sip_request(pbx: tuple[str, int], method: str, user: str, to: str = "",
                      source: str = "127.0.0.1") -> SipMessage:
    """One REGISTER or INVITE (with a PCMU offer) from a fresh UDP port on ``source`` (a
    loopback address), as anyone who can reach the PBX's SIP port may send it: From
    ``user``, no credentials, no retransmission (loopback loses nothing). Returns the
    PBX's final answer; a refused INVITE is ACKed, as RFC 3261 has it."""
    host, port = pbx
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[SipMessage] = asyncio.Queue()

    class Sender(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if data.strip():
                replies.put_nowait(SipMessage.parse(data))

    transport, _ = await loop.create_datagram_endpoint(
        Sender, local_addr=(source, 0), remote_addr=(host, port))
    try:
        local = transport.get_extra_info("sockname")[1]
        target = f"sip:{to or user}@{host}:{port}" if method == "INVITE" else f"sip:{host}:{port}"
        tag, branch = secrets.token_hex(6), f"z9hG4bK{secrets.token_hex(8)}"
        via = f"SIP/2.0/UDP {source}:{local};branch={branch};rport"
        common = [("Via", via), ("From", f"<sip:{user}@{host}>;tag={tag}"),
                  ("Call-ID", f"{tag}@{source}")]
        transport.sendto(_build(f"{method} {target} SIP/2.0", [
            *common, ("To", f"<{target if method == 'INVITE' else f'sip:{user}@{host}'}>"),
            ("CSeq", f"1 {method}"), ("Contact", f"<sip:{user}@{source}:{local}>"),
            ("Max-Forwards", "70"), *([("Expires", "60")] if method == "REGISTER" else [])],
            _sdp(local + 2) if method == "INVITE" else ""))
        while True:
            reply = await asyncio.wait_for(replies.get(), 10)
            if reply.is_request or reply.branch != branch:
                continue  # the PBX asking something of its own (an OPTIONS)
            if reply.status >= 200:
                break
        if method == "INVITE" and reply.status >= 300:
            transport.sendto(_build(f"ACK {target} SIP/2.0", [
                *common, ("To", reply.get("to")), ("CSeq", "1 ACK"), ("Max-Forwards", "70")]))
        return reply
    finally:
        transport.close()
