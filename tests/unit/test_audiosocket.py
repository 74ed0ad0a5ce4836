"""AudioSocket wire format and the server that routes streams to their calls."""

from __future__ import annotations

import asyncio
import uuid

from pbx.audiosocket import (
    FRAME_BYTES,
    AudioSocketServer,
    AudioSocketSession,
    Kind,
    encode,
    read_frame,
)


async def test_frames_round_trip() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode(Kind.AUDIO, b"\x01\x02" * 160) + encode(Kind.DTMF, b"0"))
    reader.feed_eof()
    audio = await read_frame(reader)
    dtmf = await read_frame(reader)
    assert audio is not None and audio.kind == Kind.AUDIO and len(audio.payload) == 320
    assert dtmf is not None and dtmf.kind == Kind.DTMF and dtmf.payload == b"0"
    assert await read_frame(reader) is None


async def test_truncated_frame_is_end_of_stream() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode(Kind.AUDIO, b"\0" * 320)[:100])
    reader.feed_eof()
    assert await read_frame(reader) is None


async def connect(server: AudioSocketServer, stream_id: uuid.UUID) -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter
]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(encode(Kind.UUID, stream_id.bytes))
    await writer.drain()
    return reader, writer


async def test_connection_reaches_the_session_waiting_for_its_uuid() -> None:
    server = AudioSocketServer()
    await server.start()
    stream_id = uuid.uuid4()
    got: asyncio.Future[tuple[uuid.UUID, bytes]] = asyncio.get_running_loop().create_future()

    async def handler(session: AudioSocketSession) -> None:
        async for frame in session.frames():
            if frame.kind == Kind.DTMF:
                got.set_result((session.stream_id, frame.payload))
                await session.play(b"\x10\x00" * 200)  # 400 bytes: two frames, padded
                return

    server.expect(stream_id, handler)
    reader, writer = await connect(server, stream_id)
    writer.write(encode(Kind.DTMF, b"0"))
    await writer.drain()
    assert await asyncio.wait_for(got, 2) == (stream_id, b"0")
    first = await read_frame(reader)
    second = await read_frame(reader)
    assert first is not None and second is not None
    assert len(first.payload) == len(second.payload) == FRAME_BYTES
    assert second.payload.endswith(b"\0" * 240)
    hangup = await read_frame(reader)
    assert hangup is not None and hangup.kind == Kind.HANGUP
    writer.close()
    await server.close()


async def test_unknown_stream_is_refused_without_audio() -> None:
    server = AudioSocketServer()
    await server.start()
    server.expect(uuid.uuid4(), lambda session: asyncio.sleep(0))
    reader, writer = await connect(server, uuid.uuid4())
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    await server.close()


async def test_a_session_hears_the_call_at_its_first_audio_not_at_its_connection() -> None:
    """Asterisk connects before the leg is bridged; the call's audio starts once it is."""
    reader = asyncio.StreamReader()
    session = AudioSocketSession(uuid.uuid4(), reader, None)  # type: ignore[arg-type]
    frames = session.frames()
    reader.feed_data(encode(Kind.ERROR, b"\x01"))
    assert (await anext(frames)).kind == Kind.ERROR
    assert not session.heard.is_set()
    reader.feed_data(encode(Kind.AUDIO, b"\0" * FRAME_BYTES))  # silence counts: it is the call
    assert (await anext(frames)).kind == Kind.AUDIO
    assert session.heard.is_set()
