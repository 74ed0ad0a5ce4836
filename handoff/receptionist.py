"""The reference receptionist: the built-in AI engine that needs no cloud and no model.

It greets with prompts spoken by espeak-ng (made once at set-up), listens for DTMF and
treats 0 as "a person, please". It works exactly like an external AI engine: its audio
arrives over AudioSocket and it talks to Switchboard only through the documented
control API (HTTP with the assistant's token), so it doubles as the living example of
that contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import tempfile
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from scipy.signal import resample_poly

from pbx.audiosocket import SAMPLE_RATE, AudioSocketServer, AudioSocketSession, Kind

log = logging.getLogger(__name__)

PROMPTS = {
    "greeting": (
        "Hello, you have reached the Switchboard demo. I am the virtual receptionist. "
        "Press zero at any time to speak with a person."
    ),
    "connecting": "Of course. Please stay on the line, I am connecting you to a person.",
    "back": "You are back with the virtual receptionist. How else can I help?",
    "apology": (
        "I am sorry, the person you were speaking with was disconnected. "
        "I am back with you, and I am finding someone else."
    ),
    "nobody": (
        "I am sorry, nobody is available right now. "
        "We have noted your number and will call you back."
    ),
}


class PromptError(RuntimeError):
    pass


def make_prompts(folder: Path, voice: str = "en-us") -> dict[str, Path]:
    """Speak every prompt into ``folder`` as raw slin 8 kHz (what AudioSocket carries).

    Made once: an existing prompt is kept, so a second `make run` costs nothing.
    """
    espeak = shutil.which("espeak-ng")
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, text in PROMPTS.items():
        target = folder / f"{name}.sln"
        out[name] = target
        if target.exists():
            continue
        if espeak is None:
            raise PromptError("espeak-ng is not installed; `apt-get install espeak-ng`")
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "prompt.wav"
            subprocess.run(
                [espeak, "-v", voice, "-s", "160", "-w", str(wav), text],
                check=True,
                capture_output=True,
            )
            target.write_bytes(to_slin8k(wav))
    return out


def to_slin8k(wav_path: Path) -> bytes:
    with wave.open(str(wav_path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if rate != SAMPLE_RATE:
        g = np.gcd(rate, SAMPLE_RATE)
        resampled = resample_poly(samples.astype(np.float64), SAMPLE_RATE // g, rate // g)
        samples = np.clip(resampled, -32768, 32767).astype(np.int16)
    return samples.tobytes()


@dataclass
class Receptionist:
    """One engine process: an AudioSocket listener plus a control-API client."""

    api_base: str  # e.g. http://127.0.0.1:8080/api/ai/v1
    token: str
    prompts: dict[str, bytes]
    audio: AudioSocketServer = field(default_factory=AudioSocketServer)
    _http: aiohttp.ClientSession | None = None
    _sessions: dict[str, AudioSocketSession] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, api_base: str, token: str, folder: Path) -> Receptionist:
        prompts = {name: path.read_bytes() for name, path in make_prompts(folder).items()}
        return cls(api_base=api_base, token=token, prompts=prompts)

    async def start(self) -> None:
        await self.audio.start()
        self._http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})

    async def close(self) -> None:
        await self.audio.close()
        if self._http is not None:
            await self._http.close()

    @property
    def address(self) -> str:
        return self.audio.address

    def expect_call(self, call_id: str) -> None:
        """Switchboard tells the engine a call is coming on this stream id."""
        self.audio.expect(uuid.UUID(call_id), self._converse)

    async def _post(self, call_id: str, action: str, body: dict[str, str]) -> None:
        assert self._http is not None
        url = f"{self.api_base}/calls/{call_id}/{action}"
        try:
            async with self._http.post(url, json=body) as resp:
                if resp.status >= 400:
                    log.warning("call=%s %s refused: %s %s", call_id, action, resp.status,
                                await resp.text())
        except aiohttp.ClientError as exc:
            log.warning("call=%s %s failed: %s", call_id, action, exc)

    async def say(self, session: AudioSocketSession, name: str) -> None:
        call_id = str(session.stream_id)
        await self._post(call_id, "transcript", {"speaker": "ai", "text": PROMPTS[name]})
        await session.play(self.prompts[name])

    async def _converse(self, session: AudioSocketSession) -> None:
        call_id = str(session.stream_id)
        self._sessions[call_id] = session
        speaking = asyncio.create_task(self.say(session, "greeting"))
        try:
            async for frame in session.frames():
                if frame.kind != Kind.DTMF:
                    continue
                digit = frame.payload.decode(errors="replace")
                await self._post(call_id, "transcript", {"speaker": "caller",
                                                          "text": f"[pressed {digit}]"})
                if digit == "0":
                    speaking.cancel()
                    await self._post(
                        call_id,
                        "handoff",
                        {"reason": "caller_asked",
                         "summary": "The caller pressed 0 to speak with a person."},
                    )
                    speaking = asyncio.create_task(self.say(session, "connecting"))
        finally:
            self._sessions.pop(call_id, None)
            speaking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaking
