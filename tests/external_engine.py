"""An AI engine written as someone else would write theirs, against the README's contract.

It shares no code with Switchboard (Python's standard library and aiohttp's HTTP client
only), so the end-to-end test proves the contract, not our own client of it. It is also
the README's example ("Connecting your own AI engine"): its core, between the two
markers below, is printed there, and tests/unit/test_external_engine.py keeps the two
the same.

What it does: it listens for Asterisk's AudioSocket connections and speaks a tone on
each (its "voice", so a test can hear it); when the caller presses a key, or has talked
for `patience_s` seconds, it writes what happened into the transcript and asks for a
person; it keeps every event its event socket brings and each stream's call id.

    python tests/external_engine.py --api http://127.0.0.1:8080/api/ai/v1 \\
        --listen 127.0.0.1:9092          # token: --token or $SWITCHBOARD_AI_TOKEN
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import struct
import time
import uuid
from typing import Any

import aiohttp

# ---- the README's example begins here ----
# AudioSocket: each frame is a 3-byte header (kind, payload length big-endian), then
# the payload. Audio is signed linear 16-bit little-endian, 8 kHz, mono.
HANGUP, CALL_ID, DTMF, AUDIO = 0x00, 0x01, 0x03, 0x10
FRAME_BYTES = 320  # 20 ms
LOUD = 1000  # a caller frame with a sample above this counts as speech


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind, length = struct.unpack(">BH", await reader.readexactly(3))
    return kind, await reader.readexactly(length)


class Engine:
    def __init__(self, api: str, token: str, listen: str = "127.0.0.1:0", *,
                 hz: float = 1050.0, patience_s: float = 2.0, echo: bool = False) -> None:
        self.api, self.token, self.echo = api.rstrip("/"), token, echo
        host, port = listen.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.voice, self.patience = tone(hz), round(patience_s * 50)  # in frames
        self.events: list[dict[str, Any]] = []  # what the event socket said, in order
        self.streams: list[str] = []  # the call id of each AudioSocket connection
        self.handoffs: dict[str, int] = {}  # call id -> the handoff this engine asked for
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One AI leg: Asterisk dialled us. A call that comes back from a person is a new
        connection with the same call id."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # so that close() ends the calls we are on
        speaking = None
        try:
            kind, payload = await read_frame(reader)
            if kind != CALL_ID:
                return
            call_id = str(uuid.UUID(bytes=payload))  # the control API's call id
            self.streams.append(call_id)
            self.show({"type": "audiosocket", "call_id": call_id})
            speaking = asyncio.create_task(self.speak(writer))
            talked = 0  # frames of the caller's speech
            while (got := await read_frame(reader))[0] != HANGUP:
                kind, payload = got
                if kind == DTMF:
                    await self.ask_for_a_person(call_id, f"pressed {payload.decode()}")
                elif kind == AUDIO and max(struct.unpack(f"<{len(payload) // 2}h", payload),
                                           default=0) > LOUD:
                    talked += 1
                    if talked == self.patience and call_id not in self.handoffs:
                        await self.ask_for_a_person(call_id, "talked for a while")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # Asterisk closed the connection: our leg left the call
        finally:
            if speaking is not None:
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
            writer.close()
            self.tasks.discard(task)

    async def speak(self, writer: asyncio.StreamWriter) -> None:
        # Real time, one frame per 20 ms: Asterisk plays what comes and buffers nothing.
        due = time.monotonic()
        for n in itertools.count():
            writer.write(frame(AUDIO, self.voice[n % len(self.voice)]))
            await writer.drain()
            due += 0.020
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def ask_for_a_person(self, call_id: str, why: str) -> None:
        await self.post(call_id, "transcript", {"speaker": "caller", "text": f"({why})"})
        await self.post(call_id, "transcript", {"speaker": "ai", "text": "Connecting you."})
        status, body = await self.post(call_id, "handoff", {
            "reason": "caller_asked", "summary": f"The caller wants a person ({why})."})
        self.show({"type": "asked", "call_id": call_id, "status": status, **body})
        if status == 202:  # 409: one is open, or a person has it; 422: see body["code"]
            self.handoffs[call_id] = body["handoff_id"]

    async def post(self, call_id: str, action: str, body: object) -> tuple[int, Any]:
        async with self.http.post(f"{self.api}/calls/{call_id}/{action}", json=body) as resp:
            return resp.status, await resp.json()

    # ---- the README's example ends here ----

    @property
    def address(self) -> str:  # where Asterisk connects: give it to `assistant add --engine`
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.serve, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        try:
            ws = await self.http.ws_connect(f"{self.api}/events")  # 401: a wrong token
            self.events.append(await ws.receive_json())  # "ready": the live calls
            self.show(self.events[-1])
        except BaseException:
            await self.close()
            raise
        self.tasks.add(asyncio.create_task(self.follow(ws)))

    async def close(self) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()
        await self.http.close()

    def show(self, what: dict[str, Any]) -> None:
        if self.echo:
            print(json.dumps(what), flush=True)

    async def follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:  # call_started, handoff_connected, returned_to_ai, ...
            self.events.append(json.loads(message.data))
            self.show(self.events[-1])


def tone(hz: float) -> list[bytes]:
    """One second of a tone in 20 ms frames: this engine's voice."""
    pcm = struct.pack("<8000h", *(int(9000 * math.sin(2 * math.pi * hz * n / 8000))
                                  for n in range(8000)))
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


async def run(api: str, token: str, listen: str) -> None:
    engine = Engine(api, token, listen, echo=True)
    await engine.start()
    print(json.dumps({"type": "listening", "address": engine.address}), flush=True)
    try:
        await asyncio.Event().wait()  # until Ctrl-C
    finally:
        await engine.close()


def main() -> None:
    cli = argparse.ArgumentParser(description="A tone-speaking AI engine for Switchboard.")
    cli.add_argument("--api", required=True, help="e.g. http://127.0.0.1:8080/api/ai/v1")
    cli.add_argument("--listen", default="127.0.0.1:9092", help="host:port for Asterisk")
    cli.add_argument("--token", default=os.environ.get("SWITCHBOARD_AI_TOKEN", ""))
    args = cli.parse_args()
    if not args.token:
        cli.error("the assistant's token: --token TOKEN or SWITCHBOARD_AI_TOKEN")
    try:
        asyncio.run(run(args.api, args.token, args.listen))
    except aiohttp.WSServerHandshakeError as exc:
        cli.exit(1, f"the control API refused the event socket: {exc.status} "
                    "(a wrong token is 401)\n")
    except (aiohttp.ClientConnectionError, OSError) as exc:
        cli.exit(1, f"cannot start: {exc}\n")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
