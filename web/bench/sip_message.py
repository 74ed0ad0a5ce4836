"""SIP messages as the test desk phone (web.bench.sip_phone) reads and writes them:
parsed, built, framed out of a TCP stream, and the digest answer to a challenge.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
            "l": "content-length", "c": "content-type"}
Address = tuple[str, int]


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


class MessageStream:
    """SIP messages out of a TCP byte stream (RFC 3261 18.3): each is its headers up to
    a blank line, then as many bytes of body as its Content-Length says (required on a
    stream: nothing else marks where a message ends). Blank lines between messages are
    keep-alives (RFC 5626's CRLF ping) and are skipped."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The messages ``data`` completed, in order; a partial one waits for more."""
        self._buffer += data
        messages: list[bytes] = []
        while True:
            self._buffer = self._buffer.lstrip(b"\r\n")
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return messages
            head = SipMessage.parse(self._buffer[:head_end] + b"\r\n\r\n")
            end = head_end + 4 + int(head.get("content-length") or 0)
            if len(self._buffer) < end:
                return messages
            messages.append(self._buffer[:end])
            self._buffer = self._buffer[end:]


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
