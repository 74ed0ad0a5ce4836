"""Malformed SIP and SDP for the robustness case (R18 of issue 16), written for this suite
after the kinds RFC 4475 ("SIP Torture Test Messages") and the PROTOS c07-sip suite send:

- :func:`torture_messages`: whole messages a PBX must answer with an error or drop, never
  crash on: RFC 4475's valid-but-odd and invalid classes (folded and escaped headers,
  unknown methods, a Content-Length longer than the body or negative, numbers past 2^32,
  missing mandatory headers, two requests in one datagram, a response to nothing, an
  unknown SIP version), and PROTOS's anomalies (overflows, format strings, NUL and
  non-UTF-8 bytes, CR/LF injection) in every header of a plain INVITE;
- :func:`torture_sdps`: offers whose SIP is right and whose SDP is not (no media line, a
  port past 65535, a thousand payload types, a bad address, overflowing attributes...);
  they are sent with credentials (:class:`SipProbe`) so that the PBX reads the SDP at
  all: an unauthenticated INVITE is challenged before its body is looked at.

:class:`SipProbe` is a bare UDP or WebSocket SIP sender: it sends bytes as they are and
proves the PBX still answers after each (an OPTIONS must get a reply), ACKing any INVITE
it refused so that no transaction is left retransmitting.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from tests.sip_phone import SipMessage, digest_authorization

CRLF = "\r\n"
OVERFLOWS = ("A" * 256, "A" * 4096, "A" * 60000)
ANOMALIES = (*OVERFLOWS, "%s%s%s%n%n%x%x", "\x00", "\x00" * 64, "\r\n\r\n", " ",
             "", "-1", "4294967296", "18446744073709551617", "<>", '"', "\\", ";;;;;;",
             "sip:", "\xff\xfe\xfd")
HEADERS = ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact",
           "Content-Type", "Content-Length", "Expires", "Route", "Authorization")


@dataclass(frozen=True)
class Torture:
    name: str
    data: bytes


@dataclass
class Target:
    """Where the messages go and where they say they come from."""

    host: str
    port: int
    source: str
    source_port: int
    transport: str = "UDP"  # the Via's transport: UDP, or WS over the HTTP port

    @property
    def uri(self) -> str:
        return f"sip:torture@{self.host}:{self.port}"

    def via(self) -> str:
        return (f"SIP/2.0/{self.transport} {self.source}:{self.source_port};rport;"
                f"branch=z9hG4bK{secrets.token_hex(8)}")


def sdp(port: int = 40000, body: str = "") -> str:
    return body or (f"v=0{CRLF}o=- 1 1 IN IP4 127.0.0.1{CRLF}s=-{CRLF}c=IN IP4 127.0.0.1{CRLF}"
                    f"t=0 0{CRLF}m=audio {port} RTP/AVP 0{CRLF}a=rtpmap:0 PCMU/8000{CRLF}")


def invite(t: Target, method: str = "INVITE", *, uri: str = "", body: str | None = None,
           override: dict[str, str] | None = None, drop: tuple[str, ...] = (),
           length: int | None = None, version: str = "SIP/2.0") -> bytes:
    """A request built header by header, each of which a case may replace or drop."""
    body = sdp() if body is None else body
    tag = secrets.token_hex(4)
    headers = {
        "Via": t.via(), "Max-Forwards": "70", "From": f"<sip:torture@{t.source}>;tag={tag}",
        "To": f"<{t.uri}>", "Call-ID": f"{secrets.token_hex(8)}@{t.source}",
        "CSeq": f"1 {method}", "Contact": f"<sip:torture@{t.source}:{t.source_port}>",
        "Content-Type": "application/sdp",
    }
    headers.update(override or {})
    lines = [f"{method} {uri or t.uri} {version}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name not in drop]
    encoded = body.encode("utf-8", "surrogateescape")
    if "Content-Length" not in (override or {}) and "Content-Length" not in drop:
        lines.append(f"Content-Length: {len(encoded) if length is None else length}")
    head = CRLF.join(lines) + CRLF + CRLF
    return head.encode("utf-8", "surrogateescape") + encoded


def torture_messages(t: Target, seed: int = 4475) -> list[Torture]:
    """Every message for one target; the same list for the same seed."""
    rng = random.Random(seed)
    cases = [
        # ---- odd but valid (RFC 4475 3.1.1): the PBX must parse and answer ----
        Torture("folded_headers", invite(t, override={
            "Subject": f"first line{CRLF}  folded{CRLF}\tand again",
            "From": f"  \"caller  with   spaces\"   <sip:torture@{t.source}>;tag=f1"})),
        Torture("escaped_user", invite(t, uri=f"sip:%74orture%20x@{t.host}:{t.port}")),
        Torture("unknown_method", invite(t, method="!interesting-Method0123456789_*+`.%indeed'~",
                                         body="")),
        Torture("display_name_no_space", invite(t, override={
            "To": f"caller<{t.uri}>"})),
        Torture("many_via_params", invite(t, override={
            "Via": t.via() + "".join(f";p{i}=v{i}" for i in range(400))})),
        Torture("two_requests_one_datagram", invite(t, method="OPTIONS", body="")
                + invite(t, method="OPTIONS", body="")),
        Torture("multipart_body", invite(t, override={
            "Content-Type": "multipart/mixed;boundary=7a9cbec02ceef655"}, body=(
                f"--7a9cbec02ceef655{CRLF}Content-Type: application/sdp{CRLF}{CRLF}{sdp()}"
                f"--7a9cbec02ceef655{CRLF}Content-Type: text/plain{CRLF}{CRLF}hello{CRLF}"
                f"--7a9cbec02ceef655--{CRLF}"))),
        # ---- invalid (RFC 4475 3.1.2): an error answer, or nothing ----
        Torture("content_length_past_body", invite(t, length=9000)),
        Torture("content_length_negative", invite(t, override={"Content-Length": "-999"})),
        Torture("content_length_twice", invite(t, override={
            "Content-Length": f"0{CRLF}Content-Length: 4"})),
        Torture("cseq_past_2_32", invite(t, override={"CSeq": "4294967297 INVITE"})),
        Torture("cseq_method_mismatch", invite(t, override={"CSeq": "1 REGISTER"})),
        Torture("max_forwards_zero", invite(t, override={"Max-Forwards": "0"})),
        Torture("max_forwards_huge", invite(t, override={"Max-Forwards": "300000000000"})),
        Torture("expires_huge", invite(t, override={"Expires": "1" + "0" * 40})),
        Torture("unbalanced_quotes", invite(t, override={
            "From": f"\"caller <sip:torture@{t.source}>;tag=q1"})),
        Torture("angles_in_request_uri", invite(t, uri=f"<{t.uri}>")),
        Torture("spaces_in_request_uri", invite(t, uri=f"sip:tor ture@{t.host}")),
        Torture("leading_whitespace", b"   " + invite(t)),
        Torture("unknown_version", invite(t, version="SIP/7.0")),
        Torture("no_call_id", invite(t, drop=("Call-ID",))),
        Torture("no_from", invite(t, drop=("From",))),
        Torture("no_to", invite(t, drop=("To",))),
        Torture("no_cseq", invite(t, drop=("CSeq",))),
        Torture("no_via", invite(t, drop=("Via",))),
        Torture("truncated_mid_header", invite(t)[:90]),
        Torture("response_to_nothing", (
            f"SIP/2.0 200 OK{CRLF}Via: {t.via()}{CRLF}From: <sip:a@{t.source}>;tag=1{CRLF}"
            f"To: <{t.uri}>;tag=2{CRLF}Call-ID: {secrets.token_hex(8)}{CRLF}"
            f"CSeq: 1 INVITE{CRLF}Content-Length: 0{CRLF}{CRLF}").encode()),
        Torture("response_code_huge", (
            f"SIP/2.0 4294967301 Big{CRLF}Via: {t.via()}{CRLF}Call-ID: x{CRLF}"
            f"CSeq: 1 INVITE{CRLF}Content-Length: 0{CRLF}{CRLF}").encode()),
        Torture("ack_to_nothing", invite(t, method="ACK", body="")),
        Torture("bye_to_nothing", invite(t, method="BYE", body="")),
        Torture("cancel_to_nothing", invite(t, method="CANCEL", body="")),
        Torture("empty", b""),
        Torture("only_crlf", b"\r\n\r\n"),
        Torture("not_utf8", invite(t, override={"Subject": "\udcff\udcfe\udc80"})),
    ]
    # ---- PROTOS-like: each anomaly in each header of a plain INVITE ----
    for header in HEADERS:
        for i, anomaly in enumerate(ANOMALIES):
            cases.append(Torture(f"{header.lower()}_{i}", invite(t, override={header: anomaly})))
    for i, anomaly in enumerate(ANOMALIES):
        cases.append(Torture(f"request_uri_{i}", invite(t, uri=f"sip:{anomaly}@{t.host}")))
        cases.append(Torture(f"method_{i}", invite(t, method=anomaly or "X", body="")))
    # ---- random bytes and random bit flips of a good INVITE (seeded) ----
    good = invite(t)
    for i in range(20):
        cases.append(Torture(f"random_bytes_{i}", rng.randbytes(rng.randrange(1, 1400))))
        flipped = bytearray(good)
        for _ in range(rng.randrange(1, 12)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        cases.append(Torture(f"flipped_{i}", bytes(flipped)))
    # A datagram near UDP's limit (the stack must not overrun a buffer on it).
    limit = 65000 if t.transport == "UDP" else 60000
    return [c for c in cases if len(c.data) <= limit]


def torture_sdps() -> list[tuple[str, str]]:
    """(name, SDP body) offers that are wrong in their SDP only."""
    head = f"v=0{CRLF}o=- 1 1 IN IP4 127.0.0.1{CRLF}s=-{CRLF}c=IN IP4 127.0.0.1{CRLF}t=0 0{CRLF}"
    audio = f"m=audio 40000 RTP/AVP 0{CRLF}"
    return [
        ("no_media_line", head),
        ("port_past_65535", head + f"m=audio 99999999 RTP/AVP 0{CRLF}"),
        ("port_negative", head + f"m=audio -1 RTP/AVP 0{CRLF}"),
        ("a_thousand_payload_types", head + "m=audio 40000 RTP/AVP "
         + " ".join(str(i % 128) for i in range(1000)) + CRLF),
        ("payload_type_past_127", head + f"m=audio 40000 RTP/AVP 300 4294967296{CRLF}"),
        ("two_hundred_media_lines", head + audio * 200),
        ("bad_ipv4_address", head.replace("c=IN IP4 127.0.0.1", "c=IN IP4 999.1.1.1") + audio),
        ("bad_ipv6_address", head.replace("c=IN IP4 127.0.0.1", "c=IN IP6 :::::zz") + audio),
        ("no_connection_line", head.replace(f"c=IN IP4 127.0.0.1{CRLF}", "") + audio),
        ("rtpmap_overflow", head + audio + f"a=rtpmap:0 {'P' * 5000}/8000{CRLF}"),
        ("rtpmap_zero_clock", head + f"m=audio 40000 RTP/AVP 96{CRLF}a=rtpmap:96 opus/0/2{CRLF}"),
        ("fmtp_overflow", head + f"m=audio 40000 RTP/AVP 101{CRLF}a=rtpmap:101 telephone-event/8000"
         f"{CRLF}a=fmtp:101 {'0-' * 4000}15{CRLF}"),
        ("ptime_huge", head + audio + f"a=ptime:4294967296{CRLF}a=maxptime:-5{CRLF}"),
        ("rtcp_port_past_65535", head + audio + f"a=rtcp:70000 IN IP4 127.0.0.1{CRLF}"),
        ("crypto_garbage", head + f"m=audio 40000 RTP/SAVP 0{CRLF}"
         f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{'!' * 300}{CRLF}"),
        ("fingerprint_garbage", head + f"m=audio 40000 UDP/TLS/RTP/SAVPF 0{CRLF}"
         f"a=fingerprint:sha-256 {'ZZ:' * 200}ZZ{CRLF}a=setup:sideways{CRLF}"),
        ("ice_garbage", head + audio + f"a=ice-ufrag:{'u' * 3000}{CRLF}a=ice-pwd:{CRLF}"
         f"a=candidate:1 1 UDP 99999999999 999.0.0.1 70000 typ nonsense{CRLF}"),
        ("version_one", head.replace("v=0", "v=1") + audio),
        ("no_origin", head.replace(f"o=- 1 1 IN IP4 127.0.0.1{CRLF}", "") + audio),
        ("lines_without_equals", head + audio + f"this is not sdp{CRLF}a{CRLF}={CRLF}"),
        ("nul_bytes", head + audio + f"a=tool:\x00\x00\x00{CRLF}"),
        ("declined_only", head + f"m=audio 0 RTP/AVP 0{CRLF}"),
        ("video_only", head + f"m=video 40000 RTP/AVP 31{CRLF}"),
        ("not_sdp_at_all", "<xml>hello</xml>"),
        ("huge_sdp", head + audio + f"a=x-pad:{'p' * 50000}{CRLF}"),
    ]


@dataclass
class SipProbe:
    """A bare SIP sender over UDP (``ws_url`` empty) or over one SIP WebSocket."""

    target: Target
    ws_url: str = ""
    answers: asyncio.Queue[SipMessage] = field(default_factory=asyncio.Queue)
    _udp: asyncio.DatagramTransport | None = None
    _session: aiohttp.ClientSession | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SipProbe:
        if self.ws_url:
            self._session = aiohttp.ClientSession()
            self._ws = await self._session.ws_connect(self.ws_url, protocols=("sip",))
            self._reader = asyncio.create_task(self._read_ws())
            return self
        probe = self

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                probe._received(data)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Receiver, local_addr=(self.target.source, 0),
            remote_addr=(self.target.host, self.target.port))
        self._udp = transport
        self.target.source_port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    @property
    def closed(self) -> bool:
        """The PBX closed the WebSocket (its answer to some garbage): a new one is needed."""
        return self._ws is not None and self._ws.closed

    async def send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data)
        elif self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                try:
                    await self._ws.send_str(data.decode())
                except UnicodeDecodeError:
                    await self._ws.send_bytes(data)

    def _received(self, data: bytes) -> None:
        if not data.strip():
            return
        message = SipMessage.parse(data)
        if not message.is_request and message.status >= 300:
            with contextlib.suppress(ValueError, IndexError):
                if message.cseq[1] == "INVITE":  # a refused INVITE is ACKed (RFC 3261 17.1.1.3)
                    self._spawn_send(_ack_for(message))
        self.answers.put_nowait(message)

    def _spawn_send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data)
        elif self._ws is not None and not self._ws.closed:
            task = asyncio.ensure_future(self._ws.send_str(data.decode()))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _read_ws(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self._received(frame.data.encode() if isinstance(frame.data, str)
                               else frame.data)

    async def answer_to(self, data: bytes, matches: Callable[[SipMessage], bool],
                        within: float = 5) -> SipMessage:
        """Send ``data``, return the first final answer ``matches`` picks."""
        await self.send(data)
        async with asyncio.timeout(within):
            while True:
                message = await self.answers.get()
                if not message.is_request and message.status >= 200 and matches(message):
                    return message

    async def still_answers(self) -> SipMessage:
        """An OPTIONS gets a final answer: the PBX is up and its SIP stack reads."""
        call_id = secrets.token_hex(8)
        return await self.answer_to(invite(self.target, method="OPTIONS", body="", override={
            "Call-ID": call_id}), lambda m: m.get("call-id") == call_id)

    async def authenticated_invite(self, user: str, password: str, to: str,
                                   body: str, *, keep: bool = False) -> SipMessage:
        """An INVITE as ``user`` (answering the PBX's challenge) carrying ``body``; a call
        it set up is ACKed and ended at once (BYE), or kept until :meth:`hang_up`.
        Returns the final answer."""
        t, call_id, tag = self.target, secrets.token_hex(8), secrets.token_hex(4)
        uri = f"sip:{to}@{t.host}:{t.port}"
        base = {"From": f"<sip:{user}@{t.host}>;tag={tag}", "To": f"<{uri}>",
                "Call-ID": call_id, "Contact": f"<sip:{user}@{t.source}:{t.source_port}>"}
        first = await self.answer_to(invite(t, uri=uri, body=body, override={
            **base, "CSeq": "1 INVITE"}), lambda m: m.get("call-id") == call_id)
        if first.status != 401:
            answer = first
        else:
            authorization = digest_authorization(user, password, first.all("www-authenticate"),
                                                 "INVITE", uri)
            answer = await self.answer_to(invite(t, uri=uri, body=body, override={
                **base, "CSeq": "2 INVITE", "Authorization": authorization}),
                lambda m: m.get("call-id") == call_id and m.cseq[0] == 2)
        if answer.status < 300:
            await self.send(_in_dialog(answer, "ACK", uri))
            if not keep:
                await self.hang_up(answer)
        return answer

    async def hang_up(self, answer: SipMessage) -> None:
        """BYE in the dialog ``answer`` (a 2xx) set up; returns once it is answered."""
        call_id = answer.get("call-id")
        await self.answer_to(_in_dialog(answer, "BYE", self.target.uri),
                             lambda m: m.get("call-id") == call_id and m.cseq[1] == "BYE")


def _ack_for(response: SipMessage) -> bytes:
    number, _ = response.cseq
    lines = ["ACK sip:torture SIP/2.0", f"Via: {response.get('via')}",
             f"From: {response.get('from')}", f"To: {response.get('to')}",
             f"Call-ID: {response.get('call-id')}", f"CSeq: {number} ACK",
             "Max-Forwards: 70", "Content-Length: 0"]
    return (CRLF.join(lines) + CRLF + CRLF).encode()


def _in_dialog(answer: SipMessage, method: str, uri: str) -> bytes:
    """An ACK or BYE in the dialog a 2xx set up (to the Contact it named)."""
    number = answer.cseq[0] if method == "ACK" else answer.cseq[0] + 1
    contact = answer.get("contact").strip("<>").split(">")[0] or uri
    via = answer.get("via").split(";branch=")[0] + f";branch=z9hG4bK{secrets.token_hex(8)}"
    lines = [f"{method} {contact} SIP/2.0", f"Via: {via}", f"From: {answer.get('from')}",
             f"To: {answer.get('to')}", f"Call-ID: {answer.get('call-id')}",
             f"CSeq: {number} {method}", "Max-Forwards: 70", "Content-Length: 0"]
    return (CRLF.join(lines) + CRLF + CRLF).encode()
