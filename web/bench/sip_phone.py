"""A SIP desk phone for tests and benchmarks: it registers, rings, answers, talks and
hangs up itself.

An Asterisk dialled over ARI (the carrier's "phones" in web.bench.world) is not a desk
phone: it never sends its own REGISTER or answers the PBX's OPTIONS, and its calls end
when a test hangs them up over ARI, so the PBX sees a trunk's hang-up instead of the
BYE a phone sends when its handset goes down. This user agent speaks SIP over UDP on
127.0.0.1 as a standards-compliant desk phone does (RFC 3261 with digest auth, RFC 3264
offer/answer, PCMU over RTP): REGISTER answering a 401 challenge, 200 to qualify, an
INVITE answered with 180 then 200 (or refused with 408/480/503), its own BYE. Its
speaker and microphone are web.bench.audio's RTP probe: it sends a known tone in
20 ms frames and labels every frame it hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from web.bench.audio import AGENT_HZ, RtpProbe, open_probe

T1, T2 = 0.5, 4.0  # RFC 3261 retransmission timers (s)
_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
            "l": "content-length", "c": "content-type"}
Address = tuple[str, int]
# Call-Info's auto-answer parameter (as Polycom, Yealink and Snom read it): 0 s.
AUTO_ANSWER = re.compile(r";\s*answer-after\s*=\s*0\b", re.IGNORECASE)


class SipError(Exception):
    """The PBX answered a request of the phone with a failure."""

    def __init__(self, method: str, status: int) -> None:
        super().__init__(f"{method} answered {status}")
        self.status = status


@dataclass
class SipMessage:
    start: str  # the request line or the status line
    headers: dict[str, list[str]]  # by lower-case full name, values in order
    body: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        message = cls(lines[0], {})
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            message.headers.setdefault(_COMPACT.get(name, name), []).append(value.strip())
        message.body = body[: int(message.get("content-length") or len(body))]
        return message

    def all(self, name: str) -> list[str]:
        return self.headers.get(name, [])

    def get(self, name: str) -> str:
        return self.all(name)[0] if name in self.headers else ""

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0")

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start.split()[1])

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self.get("cseq").split()
        return int(number), method

    @property
    def branch(self) -> str:
        found = re.search(r";\s*branch=([^;,\s]+)", self.get("via"))
        return found[1] if found else ""


def _tag(value: str) -> str:
    found = re.search(r";\s*tag=([^;>\s]+)", value)
    return found[1] if found else ""


def _uri(value: str) -> str:
    found = re.search(r"<([^>]+)>", value)
    return found[1] if found else value.split(";", maxsplit=1)[0].strip()


def _sdp(port: int, host: str = "127.0.0.1") -> str:
    session = secrets.randbelow(10**9)
    return (f"v=0\r\no=- {session} {session} IN IP4 {host}\r\ns=desk phone\r\n"
            f"c=IN IP4 {host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            "a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n")


def _media_of(sdp: bytes) -> tuple[Address, list[int]]:
    """Where the other side wants its RTP, and the payload types it offers."""
    text = sdp.decode("utf-8", "replace")
    host = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    audio = re.search(r"^m=audio (\d+) RTP/\w+((?: \d+)+)", text, re.M)
    if host is None or audio is None:
        return ("", 0), []
    return (host[1], int(audio[1])), [int(pt) for pt in audio[2].split()]


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


class SipPhone(asyncio.DatagramProtocol):
    """A desk phone registered as `user` with the PBX at `pbx` (its UDP SIP address).
    Its binding (`expires`) outlives any test, so it does not renew it.

    ``answer`` says what it does with the next INVITE: "answer" (180, then 200 with
    PCMU), "ring" (180 until the PBX gives up), or a final status such as 480 or 503.
    With ``auto_answer`` it answers an INVITE whose Call-Info says answer-after=0 at
    once whatever ``answer`` says, as a phone set to take intercom calls does. With
    ``sends_media`` False it answers and sends no RTP, as a phone behind a network that
    passes SIP and drops the media (its calls' media can be started by resume_media).
    """

    def __init__(self, user: str, password: str, pbx: Address, *,
                 tone_hz: float = AGENT_HZ, expires: int = 600, host: str = "127.0.0.1") -> None:
        self.user, self.password, self.pbx = user, password, pbx
        # The address it sends from, its RTP too (127.0.0.0/8 is all local): another host
        # to the PBX, as a phone elsewhere on the network would be.
        self.host = host
        self.tone_hz, self.expires = tone_hz, expires
        self.answer: str | int = "answer"
        self.auto_answer = False
        self.sends_media = True
        self.invites = 0  # INVITEs that started a call here (not re-INVITEs)
        self.calls: asyncio.Queue[Dialog] = asyncio.Queue()  # answered and ACKed
        self.dialogs: dict[str, Dialog] = {}  # by Call-ID
        self.registered = False
        self._transport: asyncio.DatagramTransport | None = None
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
        return f"sip:{self.user}@{self._local[0]}:{self._local[1]}"

    async def __aenter__(self) -> SipPhone:
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: self, local_addr=(self.host, 0))
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
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._local = transport.get_extra_info("sockname")[:2]

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
        return ("Via", f"SIP/2.0/UDP {self._local[0]}:{self._local[1]};rport;branch={branch}")

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
        """One client transaction over UDP: retransmitted (T1 doubling to T2) until a
        response comes; a final INVITE failure is ACKed on the same branch."""
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        data = _build(f"{method} {uri} SIP/2.0", [self._via(branch), *headers], body)
        responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._clients[branch] = responses
        deadline, interval, provisional = time.monotonic() + timeout, T1, False
        try:
            while (left := deadline - time.monotonic()) > 0:
                if not provisional:
                    self._send(data)
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
        dialog.media.remote = remote  # where resume_media sends
        if self.sends_media:
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
        if self._transport is not None:
            self._transport.sendto(data, addr or self.pbx)


_REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 408: "Request Timeout",
            480: "Temporarily Unavailable", 481: "Call Does Not Exist",
            487: "Request Terminated", 488: "Not Acceptable Here", 503: "Service Unavailable"}


def _build(start: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def digest_authorization(user: str, password: str, challenges: list[str], method: str,
                         uri: str) -> str:
    """The Authorization value answering a 401's challenges: RFC 7616 digest with MD5, and
    qop=auth when offered (Asterisk offers it)."""
    offers = [{k.lower(): v.strip('"') for k, v in
               re.findall(r'(\w+)\s*=\s*("[^"]*"|[^,\s]+)', c)} for c in challenges]
    md5_offer = [o for o in offers if o.get("algorithm", "MD5").upper() == "MD5"]
    if not md5_offer:
        raise SipError(method, 401)
    params, cnonce, nc = md5_offer[0], secrets.token_hex(8), "00000001"
    realm, nonce, qop = params["realm"], params["nonce"], params.get("qop", "")

    def md5(*parts: str) -> str:
        return hashlib.md5(":".join(parts).encode()).hexdigest()

    ha1, ha2 = md5(user, realm, password), md5(method, uri)
    with_qop = "auth" in qop.split(",")
    response = md5(ha1, nonce, nc, cnonce, "auth", ha2) if with_qop else md5(ha1, nonce, ha2)
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"',
              f'uri="{uri}"', f'response="{response}"', "algorithm=MD5",
              *([f"qop=auth, nc={nc}", f'cnonce="{cnonce}"'] if with_qop else []),
              *([f'opaque="{params["opaque"]}"'] if "opaque" in params else [])]
    return "Digest " + ", ".join(fields)
