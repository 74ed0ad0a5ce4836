"""Known tones in, tones out: the audio side of tests and benchmarks.

Each party of a call (caller, AI, agent) sends its own sine tone; what a party receives
is labelled frame by frame with a Goertzel filter, so we can tell exactly when the
caller stopped hearing the AI and started hearing the agent, and how long the silence
in between was. G.711 mu-law is done in NumPy (``audioop`` is deprecated).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import random
import struct
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt

RATE = 8000
FRAME = 160  # samples per 20 ms
# Exact DFT bins for a 160-sample frame (50 Hz apart), far from each other's harmonics.
CALLER_HZ = 450.0
AI_HZ = 1050.0
AGENT_HZ = 1850.0
SUPERVISOR_HZ = 2450.0  # the supervisor's desk phone (listen, whisper, barge tests)
TONES = {"caller": CALLER_HZ, "ai": AI_HZ, "agent": AGENT_HZ, "supervisor": SUPERVISOR_HZ}

# Linux: the kernel's arrival time (a struct timeval) of the last datagram read from a socket.
SIOCGSTAMP = 0x8906

_BIAS = 0x84
_CLIP = 32635


def ulaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    x = samples.astype(np.int32)
    sign = (x < 0).astype(np.int32)
    mag = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 7, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    byte = ~((sign << 7) | (exponent << 4) | mantissa) & 0xFF
    return bytes(byte.astype(np.uint8).tobytes())


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    b = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = b & 0x80
    exponent = (b >> 4) & 0x07
    mantissa = b & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def tone(hz: float, seconds: float, amplitude: float = 0.3) -> npt.NDArray[np.int16]:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


def tone_frames(hz: float, amplitude: float = 0.3) -> list[npt.NDArray[np.int16]]:
    """One second of 20 ms frames whose phase runs on across frames (no clicks)."""
    whole = tone(hz, 1.0, amplitude)
    return [whole[i : i + FRAME] for i in range(0, len(whole), FRAME)]


MIN_RMS = 300.0  # below this a frame is silence (about -40 dBFS)


def rms(samples: npt.NDArray[np.int16]) -> float:
    x = samples.astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def label(samples: npt.NDArray[np.int16], min_rms: float = MIN_RMS) -> str | None:
    """Which party's tone dominates this frame (None: silence, noise or an even mix)."""
    x = samples.astype(np.float64)
    if len(x) == 0 or rms(samples) < min_rms:
        return None
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    total = float(spectrum.sum()) or 1.0
    best, best_share = None, 0.0
    for name, hz in TONES.items():
        k = round(hz * len(x) / RATE)
        share = float(spectrum[max(k - 1, 0) : k + 2].sum()) / total
        if share > best_share:
            best, best_share = name, share
    return best if best_share > 0.35 else None


def present(samples: npt.NDArray[np.int16], min_share: float = 0.15) -> set[str]:
    """Every party whose tone is clearly in this frame (a mix holds several)."""
    x = samples.astype(np.float64)
    if len(x) == 0 or rms(samples) < MIN_RMS:
        return set()
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    total = float(spectrum.sum()) or 1.0
    found = set()
    for name, hz in TONES.items():
        k = round(hz * len(x) / RATE)
        if float(spectrum[max(k - 1, 0) : k + 2].sum()) / total >= min_share:
            found.add(name)
    return found


def voiced_by(hz: float, payloads: list[bytes]) -> int:
    """How many of these 20 ms mu-law frames are ``hz``'s tone, as :func:`label` judges
    one frame (loud enough, over 35 % of the energy at that bin), all in one NumPy pass."""
    frames = [p for p in payloads if len(p) == FRAME]
    if not frames:
        return 0
    x = ulaw_decode(b"".join(frames)).reshape(len(frames), FRAME).astype(np.float64)
    loud = np.sqrt(np.mean(x * x, axis=1)) >= MIN_RMS
    spectrum = np.abs(np.fft.rfft(x, axis=1)) ** 2
    k = round(hz * FRAME / RATE)
    share = spectrum[:, max(k - 1, 0) : k + 2].sum(axis=1) / np.maximum(spectrum.sum(axis=1), 1.0)
    return int(np.sum(loud & (share > 0.35)))


@dataclass
class Received:
    """One packet as it arrived; what it holds is worked out only when asked, so the
    probe does no signal processing while a handoff is being timed."""

    at: float  # on the time.monotonic() line: when the kernel received it
    payload: bytes
    _who: str | None = None
    _voiced: bool | None = None
    _present: set[str] | None = None

    def _analyse(self) -> None:
        samples = ulaw_decode(self.payload)
        self._who, self._voiced = label(samples), rms(samples) >= MIN_RMS

    @property
    def kind(self) -> str:
        """Who this frame is (web.bench.audio.TONES), or '~' a voice that is no party's
        tone, or '-' silence."""
        return self.who or ("~" if self.voiced else "-")

    @property
    def heard(self) -> set[str]:
        """Every party whose tone is clearly in this frame, the dominant one or not: a
        frame the mixer made of the AI and the agent holds both."""
        if self._present is None:
            self._present = present(ulaw_decode(self.payload))
        return self._present

    @property
    def who(self) -> str | None:
        if self._voiced is None:
            self._analyse()
        return self._who

    @property
    def voiced(self) -> bool:
        if self._voiced is None:
            self._analyse()
        return bool(self._voiced)


@dataclass
class RtpProbe(asyncio.DatagramProtocol):
    """A party on an ARI externalMedia (UnicastRTP, ulaw) leg: sends its tone, keeps
    what it hears with arrival times."""

    send_hz: float | None
    received: list[Received] = field(default_factory=list)
    remote: tuple[str, int] | None = None
    transport: asyncio.DatagramTransport | None = None
    _task: asyncio.Task[None] | None = None
    _ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    _seq: int = field(default_factory=lambda: random.getrandbits(16))
    _ts: int = field(default_factory=lambda: random.getrandbits(32))
    _stopped_at: float | None = None
    _fd: int = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A UDP endpoint's transport; on Python 3.11 its class does not derive from
        # DatagramTransport, so it is named here rather than checked.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._fd = transport.get_extra_info("socket").fileno()
        with contextlib.suppress(OSError):
            # The first ask turns the socket's arrival stamps on (and has none to give).
            fcntl.ioctl(self._fd, SIOCGSTAMP, bytes(16))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) <= 12:
            return
        self.received.append(Received(self._arrival(), data[12:]))

    def _arrival(self) -> float:
        """When the kernel received the datagram just read, on the time.monotonic() line.

        Not the time this event loop got round to it: a loop busy for 20 ms (another
        call's analysis, the garbage collector) would show as a gap the caller never had,
        followed by two frames at once.
        """
        try:
            stamp = fcntl.ioctl(self._fd, SIOCGSTAMP, bytes(16))
        except OSError:
            return time.monotonic()
        seconds, microseconds = struct.unpack("@qq", stamp)
        return float(seconds + microseconds / 1e6 - (time.time() - time.monotonic()))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def start_sending(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        self._task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        assert self.transport is not None and self.remote is not None
        frames = tone_frames(self.send_hz) if self.send_hz else [np.zeros(FRAME, np.int16)]
        payloads = [ulaw_encode(f) for f in frames]
        if self._stopped_at is not None:
            # Sending again after a loss, as a phone whose network came back: the same
            # stream (SSRC, next sequence number), its clock moved on by the time lost.
            self._ts += round((time.monotonic() - self._stopped_at) * RATE)
            self._stopped_at = None
        n = 0
        next_at = time.monotonic()
        while True:
            header = struct.pack("!BBHII", 0x80, 0, self._seq & 0xFFFF,
                                 self._ts & 0xFFFFFFFF, self._ssrc)
            self.transport.sendto(header + payloads[n % len(payloads)], self.remote)
            self._seq, self._ts, n = self._seq + 1, self._ts + FRAME, n + 1
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    @property
    def sending(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop_sending(self) -> None:
        """Go quiet but keep receiving, as a phone whose network or power went does."""
        if self._task is not None:
            self._task.cancel()
            self._stopped_at = time.monotonic()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()

    def first(self, who: str, after: float = 0.0) -> float | None:
        """The first frame since ``after`` that is mostly ``who``'s tone."""
        for item in self.received:
            if item.at >= after and item.who == who:
                return item.at
        return None

    def first_in_mix(self, who: str, after: float = 0.0) -> float | None:
        """The first frame since ``after`` in which ``who``'s tone is heard, mixed with
        another party's or alone: when a caller starts hearing a party who joins a
        conversation still going on."""
        for item in self.received:
            if item.at >= after and who in item.heard:
                return item.at
        return None

    def longest_gap_ms(self, start: float, end: float) -> float:
        """The longest stretch without audible audio (anyone's, or a mix) that ends in
        [start, end], counted from the last audible frame before it: a silence already
        running at `start` counts whole, one over before `start` does not."""
        voiced = [r.at for r in self.received if r.at <= end and r.voiced]
        earlier = [at for at in voiced if at < start]
        points = earlier[-1:] + [at for at in voiced if at >= start]
        if len(points) < 2:
            return float("inf")
        return float(np.max(np.diff(points)) * 1000)


async def open_probe(send_hz: float | None, host: str = "127.0.0.1") -> RtpProbe:
    loop = asyncio.get_running_loop()
    _, probe = await loop.create_datagram_endpoint(
        lambda: RtpProbe(send_hz), local_addr=(host, 0)
    )
    return probe

