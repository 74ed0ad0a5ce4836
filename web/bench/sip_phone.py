"""A SIP desk phone for tests and benchmarks: it registers, rings, answers, talks and
hangs up itself.

An Asterisk dialled over ARI (the carrier's "phones" in web.bench.world) is not a desk
phone: it never sends its own REGISTER or answers the PBX's OPTIONS, and its calls end
when a test hangs them up over ARI, so the PBX sees a trunk's hang-up instead of the
BYE a phone sends when its handset goes down. This user agent speaks SIP over UDP (or
over one TCP connection it keeps) on 127.0.0.1 as a standards-compliant desk phone does
(RFC 3261 with digest auth, RFC 3264 offer/answer, PCMU over RTP): REGISTER answering a
401 challenge, 200 to qualify, an INVITE answered with 180 then 200 (or refused with
408/480/503), its own BYE. Its speaker and microphone are web.bench.audio's RTP probe:
it sends a known tone in 20 ms frames and labels every frame it hears. Its messages are
web.bench.sip_message's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from web.bench.audio import AGENT_HZ, RtpProbe, open_probe
from web.bench.sip_message import (
    _REASONS,
    Address,
    MessageStream,
    SipError,
    SipMessage,
    _build,
    _media_of,
    _sdp,
    _tag,
    _uri,
    digest_authorization,
)

T1, T2 = 0.5, 4.0  # RFC 3261 retransmission timers (s)
# Call-Info's auto-answer parameter (as Polycom, Yealink and Snom read it): 0 s.
AUTO_ANSWER = re.compile(r";\s*answer-after\s*=\s*0\b", re.IGNORECASE)


@dataclass
class Dialog:
    """One call of the phone (or its registration, which has no remote tag)."""

    call_id: str
    local_uri: str  # ours: the From of what we send
    remote_uri: str
    remote_target: str  # where our requests go: the peer's Contact (or the registrar)
    local_tag: str = field(default_factory=lambda: secrets.token_hex(6))
    remote_tag: str = ""
    route: list[str] = field(default_factory=list)  # from Record-Route
    cseq: int = field(default_factory=lambda: secrets.randbelow(10_000) + 1)
    media: RtpProbe | None = None
    answered: bool = False
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)  # 2xx and its ACK
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ended_by: str = ""  # "phone" (its BYE) or "pbx" (BYE, CANCEL or a refusal)
    call_info: str = ""  # the INVITE's Call-Info (an auto-answer request)

    def heard(self, who: str, after: float = 0.0) -> float | None:
        """When the phone first heard `who`'s tone (web.bench.audio.TONES) after `after`."""
        return self.media.first(who, after) if self.media is not None else None


class SipPhone(asyncio.DatagramProtocol, asyncio.Protocol):
    """A desk phone registered as `user` with the PBX at `pbx` (its SIP address). Its
    binding (`expires`) outlives any test, so it does not renew it.

    Over ``transport="tcp"`` it opens one connection to the PBX and keeps it: its
    REGISTER, its calls and the calls to it all go down that connection (RFC 3261 18:
    a request or response is sent back on the connection it came on), as a desk phone
    behind NAT on TCP does. It listens on no port, so the PBX reaches it only through
    that connection; once the connection is gone, so is the phone. With ``nat_address``
    its Contact and Via name that address and port 5060 (a private address behind NAT,
    where nothing reaches it), so only a registrar that answers where the requests came
    from reaches it.

    ``answer`` says what it does with the next INVITE: "answer" (180, then 200 with
    PCMU), "ring" (180 until the PBX gives up), or a final status such as 480 or 503.
    With ``auto_answer`` it answers an INVITE whose Call-Info says answer-after=0 at
    once whatever ``answer`` says, as a phone set to take intercom calls does.
    """

    def __init__(self, user: str, password: str, pbx: Address, *,
                 tone_hz: float = AGENT_HZ, expires: int = 600, host: str = "127.0.0.1",
                 transport: Literal["udp", "tcp"] = "udp", nat_address: str = "") -> None:
        self.user, self.password, self.pbx = user, password, pbx
        self.tcp = transport == "tcp"
        self.nat_address = nat_address
        # The address it sends from, its RTP too (127.0.0.0/8 is all local): another host
        # to the PBX, as a phone elsewhere on the network would be.
        self.host = host
        self.tone_hz, self.expires = tone_hz, expires
        self.answer: str | int = "answer"
        self.auto_answer = False
        self.invites = 0  # INVITEs that started a call here (not re-INVITEs)
        self.calls: asyncio.Queue[Dialog] = asyncio.Queue()  # answered and ACKed
        self.dialogs: dict[str, Dialog] = {}  # by Call-ID
        self.registered = False
        self._transport: asyncio.DatagramTransport | asyncio.Transport | None = None
        self._stream = MessageStream()  # over TCP: what came in, cut into messages
        self.connected = asyncio.Event()  # over TCP: until the connection is lost
        self._clients: dict[str, asyncio.Queue[SipMessage]] = {}  # by our Via branch
        self._answers: dict[tuple[str, str], bytes] = {}  # (branch, method): final reply
        self._ringing: dict[str, tuple[SipMessage, Address, Dialog]] = {}  # by branch
        self._unacked: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._registration: Dialog | None = None
        self._local: Address = (host, 0)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.pbx[0]}:{self.pbx[1]}"

    @property
    def contact(self) -> str:
        return (f"sip:{self.user}@{self._sent_by}" + (";transport=tcp" if self.tcp else ""))

    @property
    def _sent_by(self) -> str:
        """Where the phone says it is: its socket, or behind NAT its private address."""
        return (f"{self.nat_address}:5060" if self.nat_address
                else f"{self._local[0]}:{self._local[1]}")

    async def __aenter__(self) -> SipPhone:
        loop = asyncio.get_running_loop()
        if self.tcp:
            await loop.create_connection(lambda: self, *self.pbx, local_addr=(self.host, 0))
        else:
            await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        try:
            await self.register()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's protocol is handed its datagram transport, though in
        # Python 3.11 that class does not derive from asyncio.DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport | asyncio.Transport, transport)
        self._local = transport.get_extra_info("sockname")[:2]
        self.connected.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected.clear()

    async def close(self) -> None:
        """Hang up what is still up, then unregister, as a phone being unplugged
        properly does."""
        for dialog in list(self.dialogs.values()):
            if dialog.confirmed.is_set() and not dialog.ended.is_set():
                with contextlib.suppress(SipError, TimeoutError):
                    await self.hang_up(dialog)
        if self.registered:
            with contextlib.suppress(SipError, TimeoutError):
                await self.register(expires=0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(d.media.close() for d in self.dialogs.values() if d.media))
        if self._transport is not None:
            self._transport.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- what a test does with the phone -----------------------------------------------

    async def register(self, expires: int | None = None) -> None:
        """REGISTER (answering the PBX's digest challenge); 0 removes the binding."""
        expires = self.expires if expires is None else expires
        if self._registration is None:
            registrar = f"sip:{self.pbx[0]}:{self.pbx[1]}"
            self._registration = Dialog(secrets.token_hex(8), self.aor, self.aor, registrar)
        response = await self._request("REGISTER", self._registration, extra=[
            ("Contact", f"<{self.contact}>"), ("Expires", str(expires))])
        if response.status != 200:
            raise SipError("REGISTER", response.status)
        self.registered = expires > 0

    async def wait_call(self, timeout: float = 10.0) -> Dialog:
        """The next call this phone answered (its ACK arrived)."""
        return await asyncio.wait_for(self.calls.get(), timeout)

    def pick_up(self) -> int:
        """The handset lifted on every call ringing here (``answer = "ring"``) now;
        returns how many."""
        ringing = list(self._ringing.values())
        self._ringing.clear()
        for invite, addr, dialog in ringing:
            self._spawn(self._pick_up(invite, addr, dialog))
        return len(ringing)

    async def call(self, number: str, timeout: float = 10.0) -> Dialog:
        """Place a call to `number` at the PBX; returns it answered and ACKed."""
        media = await open_probe(self.tone_hz, self.host)
        target = f"sip:{number}@{self.pbx[0]}:{self.pbx[1]}"
        dialog = Dialog(secrets.token_hex(8), self.aor, target, target, media=media)
        self.dialogs[dialog.call_id] = dialog
        response = await self._request("INVITE", dialog, body=_sdp(media.port, self.host),
                                       timeout=timeout)
        if response.status >= 300:
            self._end(dialog, "pbx")
            raise SipError("INVITE", response.status)
        dialog.remote_tag = _tag(response.get("to"))
        dialog.remote_target = _uri(response.get("contact")) or target
        dialog.route = list(reversed(response.all("record-route")))
        self._send_ack(dialog)
        remote, _ = _media_of(response.body)
        media.start_sending(remote)
        dialog.answered = True
        dialog.confirmed.set()
        return dialog

    async def hang_up(self, dialog: Dialog, reason: str = "") -> None:
        """Put the handset down: BYE (with an RFC 3326 Reason if given, such as
        'Q.850;cause=16'); the call is over once the PBX says 200."""
        self.stop_media(dialog)
        response = await self._request("BYE", dialog,
                                       extra=[("Reason", reason)] if reason else None)
        self._end(dialog, "phone")
        if response.status not in (200, 481):
            raise SipError("BYE", response.status)

    def stop_media(self, dialog: Dialog) -> None:
        """Stop sending RTP and say nothing: a phone whose power or network went."""
        if dialog.media is not None:
            dialog.media.stop_sending()

    def resume_media(self, dialog: Dialog) -> None:
        """Send RTP again where it went before: a phone whose network came back."""
        if dialog.media is not None and dialog.media.remote is not None:
            dialog.media.start_sending(dialog.media.remote)

    async def wait_hears(self, dialog: Dialog, who: str, after: float = 0.0,
                         timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while (at := dialog.heard(who, after)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user} never heard {who}")
            await asyncio.sleep(0.05)
        return at

    # ---- requests the phone sends ------------------------------------------------------

    def _headers(self, dialog: Dialog, method: str, cseq: int) -> list[tuple[str, str]]:
        remote = f"<{dialog.remote_uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag
                                             else "")
        return [("From", f"<{dialog.local_uri}>;tag={dialog.local_tag}"), ("To", remote),
                ("Call-ID", dialog.call_id), ("CSeq", f"{cseq} {method}"),
                *(("Route", route) for route in dialog.route),
                # A REGISTER names its Contact itself, with the binding's expiry.
                *([] if method == "REGISTER" else [("Contact", f"<{self.contact}>")]),
                ("Max-Forwards", "70"),
                ("User-Agent", "switchboard-test-deskphone")]

    def _via(self, branch: str) -> tuple[str, str]:
        return ("Via", f"SIP/2.0/{'TCP' if self.tcp else 'UDP'} {self._sent_by};rport;"
                f"branch={branch}")

    async def _request(self, method: str, dialog: Dialog, body: str = "",
                       extra: list[tuple[str, str]] | None = None,
                       timeout: float = 8.0) -> SipMessage:
        """Send a request of `dialog` and return its final response; a 401/407 is
        answered once with digest credentials, as a phone does."""
        authorization: list[tuple[str, str]] = []
        for _ in range(2):
            dialog.cseq += 1
            headers = self._headers(dialog, method, dialog.cseq) + (extra or []) + authorization
            response = await self._transaction(method, dialog.remote_target, headers, body,
                                               timeout)
            challenge = "www-authenticate" if response.status == 401 else "proxy-authenticate"
            if response.status not in (401, 407) or authorization:
                return response
            name = "Authorization" if response.status == 401 else "Proxy-Authorization"
            authorization = [(name, self._digest(response.all(challenge), method,
                                                 dialog.remote_target))]
        return response

    async def _transaction(self, method: str, uri: str, headers: list[tuple[str, str]],
                           body: str, timeout: float) -> SipMessage:
        """One client transaction: over UDP retransmitted (T1 doubling to T2) until a
        response comes, over TCP sent once (RFC 3261 17.1: the connection is reliable);
        a final INVITE failure is ACKed on the same branch."""
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        data = _build(f"{method} {uri} SIP/2.0", [self._via(branch), *headers], body)
        responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._clients[branch] = responses
        deadline, interval, provisional = time.monotonic() + timeout, T1, False
        sent = False
        try:
            while (left := deadline - time.monotonic()) > 0:
                if not provisional and not (sent and self.tcp):
                    self._send(data)
                    sent = True
                try:
                    response = await asyncio.wait_for(
                        responses.get(), left if provisional else min(interval, left))
                except TimeoutError:
                    interval = min(interval * 2, T2)
                    continue
                if response.status < 200:
                    provisional = True
                    continue
                if method == "INVITE" and response.status >= 300:
                    ack = [h for h in headers if h[0] in ("From", "Call-ID", "Route",
                                                            "Max-Forwards")]
                    self._send(_build(f"ACK {uri} SIP/2.0", [
                        self._via(branch), *ack, ("To", response.get("to")),
                        ("CSeq", f"{response.cseq[0]} ACK")]))
                return response
            raise TimeoutError(f"{method} got no final answer")
        finally:
            del self._clients[branch]

    def _send_ack(self, dialog: Dialog) -> None:
        """The ACK of a 2xx: a request of its own (new branch), with the INVITE's CSeq."""
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        headers = self._headers(dialog, "ACK", dialog.cseq)
        self._send(_build(f"ACK {dialog.remote_target} SIP/2.0", [self._via(branch), *headers]))

    def _digest(self, challenges: list[str], method: str, uri: str) -> str:
        return digest_authorization(self.user, self.password, challenges, method, uri)

    # ---- requests the PBX sends --------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._received(data, addr)

    def data_received(self, data: bytes) -> None:
        for message in self._stream.feed(data):
            self._received(message, self.pbx)

    def _received(self, data: bytes, addr: Address) -> None:
        if not data.strip():
            return  # a keep-alive
        message = SipMessage.parse(data)
        if not message.is_request:
            if (waiting := self._clients.get(message.branch)) is not None:
                waiting.put_nowait(message)
            elif message.status == 200 and message.cseq[1] == "INVITE":
                dialog = self.dialogs.get(message.get("call-id"))
                if dialog is not None:
                    self._send_ack(dialog)  # our ACK was lost: the 2xx came again
            return
        if (known := self._answers.get((message.branch, message.cseq[1]))) is not None:
            self._send(known, addr)  # a retransmission gets the same answer
            return
        handler = {"INVITE": self._on_invite, "ACK": self._on_ack, "BYE": self._on_bye,
                   "CANCEL": self._on_cancel}.get(message.cseq[1])
        if handler is not None:
            handler(message, addr)
        else:  # OPTIONS (the PBX's qualify), INFO, NOTIFY: the phone is here
            self._reply(message, addr, 200)

    def _on_invite(self, invite: SipMessage, addr: Address) -> None:
        dialog = self.dialogs.get(invite.get("call-id"))
        if _tag(invite.get("to")):  # a re-INVITE: the media stays as it is
            if dialog is None or dialog.media is None:
                self._reply(invite, addr, 481)
            else:
                self._final(invite, addr, 200, dialog, _sdp(dialog.media.port, self.host))
            return
        self.invites += 1
        dialog = Dialog(invite.get("call-id"), _uri(invite.get("to")), _uri(invite.get("from")),
                        _uri(invite.get("contact")), remote_tag=_tag(invite.get("from")),
                        route=invite.all("record-route"), call_info=invite.get("call-info"))
        self.dialogs[dialog.call_id] = dialog
        self._reply(invite, addr, 100)
        if self.auto_answer and AUTO_ANSWER.search(dialog.call_info):
            self._spawn(self._pick_up(invite, addr, dialog))  # no ringing: it answers
            return
        self._reply(invite, addr, 180, dialog)
        if self.answer == "ring":
            self._ringing[invite.branch] = (invite, addr, dialog)
        elif isinstance(self.answer, int):
            self._final(invite, addr, self.answer, dialog)
            self._end(dialog, "pbx")
        else:
            self._spawn(self._pick_up(invite, addr, dialog))

    async def _pick_up(self, invite: SipMessage, addr: Address, dialog: Dialog) -> None:
        remote, payload_types = _media_of(invite.body)
        if 0 not in payload_types:  # PCMU is all this phone speaks
            self._final(invite, addr, 488, dialog)
            self._end(dialog, "pbx")
            return
        dialog.media = await open_probe(self.tone_hz, self.host)
        dialog.answered = True
        self._final(invite, addr, 200, dialog, _sdp(dialog.media.port, self.host))
        dialog.media.start_sending(remote)  # the handset is up: the agent speaks

    def _on_ack(self, ack: SipMessage, addr: Address) -> None:
        task = self._unacked.pop((ack.get("call-id"), ack.cseq[0]), None)
        if task is not None:
            task.cancel()
        dialog = self.dialogs.get(ack.get("call-id"))
        if dialog is not None and dialog.answered and not dialog.confirmed.is_set():
            dialog.confirmed.set()
            self.calls.put_nowait(dialog)

    def _on_bye(self, bye: SipMessage, addr: Address) -> None:
        dialog = self.dialogs.get(bye.get("call-id"))
        self._reply(bye, addr, 200 if dialog is not None else 481)
        if dialog is not None:
            self._end(dialog, "pbx")

    def _on_cancel(self, cancel: SipMessage, addr: Address) -> None:
        self._reply(cancel, addr, 200)
        ringing = self._ringing.pop(cancel.branch, None)
        if ringing is not None:
            invite, invite_from, dialog = ringing
            self._final(invite, invite_from, 487, dialog)
            self._end(dialog, "pbx")

    # ---- responses and the wire --------------------------------------------------------

    def _reply(self, request: SipMessage, addr: Address, status: int,
               dialog: Dialog | None = None, body: str = "") -> bytes:
        to = request.get("to")
        if dialog is not None and not _tag(to):
            to = f"{to};tag={dialog.local_tag}"
        headers = [*(("Via", via) for via in request.all("via")), ("From", request.get("from")),
                   ("To", to), ("Call-ID", request.get("call-id")), ("CSeq", request.get("cseq"))]
        if dialog is not None:
            headers += [*(("Record-Route", r) for r in request.all("record-route")),
                        ("Contact", f"<{self.contact}>")]
        data = _build(f"SIP/2.0 {status} {_REASONS.get(status, 'Status')}", headers, body)
        if status >= 200:
            self._answers[(request.branch, request.cseq[1])] = data
        self._send(data, addr)
        return data

    def _final(self, invite: SipMessage, addr: Address, status: int, dialog: Dialog,
               body: str = "") -> None:
        """A final answer to an INVITE, sent again (T1 doubling) until its ACK comes."""
        self._ringing.pop(invite.branch, None)
        data = self._reply(invite, addr, status, dialog, body)

        async def until_acked() -> None:
            interval = T1
            for _ in range(7):  # 64*T1 in all, then the transaction gives up
                await asyncio.sleep(interval)
                self._send(data, addr)
                interval = min(interval * 2, T2)

        self._unacked[(dialog.call_id, invite.cseq[0])] = self._spawn(until_acked())

    def _end(self, dialog: Dialog, by: str) -> None:
        self.stop_media(dialog)
        if not dialog.ended.is_set():
            dialog.ended_by = by
            dialog.ended.set()

    def _send(self, data: bytes, addr: Address | None = None) -> None:
        if self._transport is None:
            return
        if self.tcp:  # everything goes down the one connection, whoever it answers
            cast(asyncio.Transport, self._transport).write(data)
        else:
            cast(asyncio.DatagramTransport, self._transport).sendto(data, addr or self.pbx)


