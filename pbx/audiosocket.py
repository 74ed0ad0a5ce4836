"""AudioSocket: how an AI engine's audio joins the call bridge.

Asterisk's ``externalMedia`` with ``encapsulation=audiosocket`` dials out over TCP to
the engine and speaks a tiny TLV protocol: a 3-byte header (kind, big-endian length)
then the payload. Audio is signed linear 16-bit, 8 kHz, mono, 20 ms (320 bytes) per
frame; the first frame carries the stream's UUID, which is how a connection is
matched to the call it belongs to. Since Asterisk 22.4 DTMF from the bridge arrives as
kind 0x03 with one ASCII digit.

This module holds the wire format and a server that hands each connection to the
session waiting for its UUID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2  # 320: 160 samples of int16


class Kind(IntEnum):
    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10
    ERROR = 0xFF


@dataclass(frozen=True)
class Frame:
    kind: Kind
    payload: bytes


def encode(kind: Kind, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """The next frame, or None at end of stream."""
    try:
        header = await reader.readexactly(3)
        kind, length = struct.unpack(">BH", header)
        payload = await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, ConnectionError):
        # Asterisk hung the leg up (or reset the connection): the stream is over.
        return None
    try:
        return Frame(Kind(kind), payload)
    except ValueError:
        log.warning("AudioSocket: unknown frame kind 0x%02x (%d bytes) ignored", kind, length)
        return Frame(Kind.ERROR, payload)


class AudioSocketSession:
    """One AI leg's audio: frames in, paced frames out."""

    def __init__(
        self, stream_id: uuid.UUID, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.stream_id = stream_id
        self._reader = reader
        self._writer = writer
        self._next_send = 0.0
        self.closed = asyncio.Event()
        # Set at the first frame from the call: Asterisk connects the stream before the
        # leg is in the call's bridge, reads what the engine sends meanwhile and throws
        # it away, and starts sending the call's audio (every 20 ms, silence too) once
        # the leg is bridged. So this is when the caller can hear the engine.
        self.heard = asyncio.Event()

    async def frames(self) -> AsyncIterator[Frame]:
        while True:
            frame = await read_frame(self._reader)
            if frame is None or frame.kind == Kind.HANGUP:
                self.closed.set()
                return
            if frame.kind in (Kind.AUDIO, Kind.DTMF):
                self.heard.set()
            yield frame

    async def play(self, pcm: bytes) -> None:
        """Send ``pcm`` (slin 8 kHz) in real time, one 20 ms frame per tick.

        Asterisk does not buffer AudioSocket audio for us: frames sent faster than real
        time are played late or dropped, so the pacing is ours.
        """
        loop = time.monotonic
        now = loop()
        self._next_send = max(self._next_send, now)
        for offset in range(0, len(pcm), FRAME_BYTES):
            if self.closed.is_set() or self._writer.is_closing():
                return
            chunk = pcm[offset : offset + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
            self._writer.write(encode(Kind.AUDIO, chunk))
            self._next_send += FRAME_MS / 1000
            delay = self._next_send - loop()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                try:
                    await self._writer.drain()
                except ConnectionError:
                    self.closed.set()  # the leg is gone; nobody to talk to
                    return

    async def hangup(self) -> None:
        with contextlib.suppress(ConnectionError):
            self._writer.write(encode(Kind.HANGUP))
            await self._writer.drain()
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self.closed.set()


SessionHandler = Callable[[AudioSocketSession], Awaitable[None]]


class AudioSocketServer:
    """Accepts Asterisk's AudioSocket connections and routes them by stream UUID.

    Callers ``expect(stream_id, handler)`` before asking Asterisk for the external
    media channel; a connection for an unknown UUID is closed at once, so a stray or
    hostile connection never gets audio from a call.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, any_stream: SessionHandler | None = None
    ) -> None:
        self.host = host
        self.port = port
        # An engine that serves every call alike (a test engine, an external engine's
        # own listener) takes any stream id; Switchboard's own engines expect each one.
        self._any_stream = any_stream
        self._handlers: dict[uuid.UUID, SessionHandler] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def expect(self, stream_id: uuid.UUID, handler: SessionHandler) -> None:
        self._handlers[stream_id] = handler

    def forget(self, stream_id: uuid.UUID) -> None:
        self._handlers.pop(stream_id, None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            first = await asyncio.wait_for(read_frame(reader), 5)
            if first is None or first.kind != Kind.UUID or len(first.payload) != 16:
                log.warning("AudioSocket: connection without a stream id refused")
                writer.close()
                return
            stream_id = uuid.UUID(bytes=first.payload)
            handler = self._handlers.pop(stream_id, None) or self._any_stream
            if handler is None:
                log.warning("AudioSocket: unexpected stream %s refused", stream_id)
                writer.close()
                return
            session = AudioSocketSession(stream_id, reader, writer)
            try:
                await handler(session)
            except Exception:
                log.exception("AudioSocket handler for stream %s failed", stream_id)
            finally:
                if not writer.is_closing():
                    await session.hangup()
        except TimeoutError:
            writer.close()
        finally:
            self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
