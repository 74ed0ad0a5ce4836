"""The ports an Asterisk instance listens on: the ones asked for, checked free on
loopback, or free ones picked (HTTP/ARI, SIP, AMI and a block of RTP ports)."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

from pbx.asterisk_config import Ports, default_max_calls, rtp_ports_for
from pbx.installation import AsteriskUnavailable


class PortInUse(AsteriskUnavailable):
    def __init__(self, key: str, port: int, proto: str) -> None:
        super().__init__(
            f"{key}: {proto} port {port} on 127.0.0.1 is already in use by another program; "
            f"stop it or choose another port (or 0 for any free port)"
        )
        self.key = key
        self.port = port


def _port_free(port: int, kind: int) -> bool:
    """Whether Asterisk could bind ``port`` on loopback now.

    For TCP that means nobody listens on it. Connections that ended a moment ago (a
    browser's SIP WebSocket, the controller's ARI socket, closed by Asterisk as it
    stopped) stay in TIME_WAIT on the port for a minute; Asterisk binds its HTTP and
    AMI listeners with SO_REUSEADDR and starts fine over them, so the check does too.
    Linux still refuses that bind while a socket listens on the port. UDP has no
    TIME_WAIT, and SO_REUSEADDR there would let two phones' worth of sockets share a
    port, so a UDP port is free only if a plain bind succeeds.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(kind: int = socket.SOCK_STREAM, avoid: frozenset[int] = frozenset()) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise AsteriskUnavailable("no free port on 127.0.0.1")


def claim_port(
    key: str, wanted: int, kind: int = socket.SOCK_STREAM, avoid: frozenset[int] = frozenset()
) -> int:
    """``wanted`` if free (0 picks any free port); a taken port is reported by its key."""
    if wanted == 0:
        return free_port(kind, avoid)
    if not _port_free(wanted, kind):
        raise PortInUse(key, wanted, "TCP" if kind == socket.SOCK_STREAM else "UDP")
    return wanted


def free_rtp_range(size: int, avoid: frozenset[int] = frozenset()) -> tuple[int, int]:
    """A block of ``size`` UDP ports no other instance uses (nor holds a port of
    ``avoid``), starting on an even port (RTP's); random so side-by-side runs differ."""
    size += size % 2
    for _ in range(50):
        start = random.randrange(20000, max(20001, 50000 - size), 2 * size)
        end = start + size - 1
        probe = (start, start + size // 2, end)
        if not any(start <= p <= end for p in avoid) and all(
            _port_free(p, socket.SOCK_DGRAM) for p in probe
        ):
            return start, end
    raise AsteriskUnavailable(f"no free block of {size} UDP ports for RTP from 20000 up")


@dataclass(frozen=True)
class PortRequest:
    """Ports an instance should use; 0 means "any free port"."""

    http: int = 0
    sip: int = 0
    ami: int = 0
    rtp_start: int = 0
    rtp_end: int = 0


def allocate_ports(
    req: PortRequest, avoid: frozenset[int] = frozenset(), max_calls: int = 0
) -> Ports:
    """Concrete ports for ``req``; ``avoid`` holds ports already given to another instance.
    An RTP range not asked for is sized for ``max_calls`` (0: the machine's default)."""
    http = claim_port("asterisk.http_port", req.http, avoid=avoid)
    sip = claim_port("asterisk.sip_port", req.sip, socket.SOCK_DGRAM, avoid | {http})
    ami = claim_port("asterisk.ami_port", req.ami, avoid=avoid | {http, sip})
    size = rtp_ports_for(max_calls or default_max_calls())
    if req.rtp_start:
        rtp_start, rtp_end = req.rtp_start, req.rtp_end or req.rtp_start + size - 1
    else:
        rtp_start, rtp_end = free_rtp_range(size, avoid)
    return Ports(http=http, sip=sip, ami=ami, rtp_start=rtp_start, rtp_end=rtp_end)

