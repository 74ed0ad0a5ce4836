"""Prompts spoken by espeak-ng: the receptionist's words and a number's menu.

Spoken once into a folder as raw slin 8 kHz, what AudioSocket carries and what Asterisk
plays as ``.sln``; a prompt whose file exists is kept, so a second start costs nothing.
The file name carries a digest of the text and voice, so editing a prompt makes a new
file instead of playing the old words.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from pbx.audiosocket import SAMPLE_RATE


class PromptError(RuntimeError):
    pass


def speak(folder: Path, texts: Mapping[str, str], voice: str = "en-us") -> dict[str, Path]:
    """Each of ``texts`` (by name) as a file in ``folder``, made if missing."""
    espeak = shutil.which("espeak-ng")
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, text in texts.items():
        digest = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:10]
        target = folder / f"{name}-{digest}.sln"
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
            partial = target.with_suffix(".part")
            partial.write_bytes(to_slin8k(wav))
            # Renamed into place, so an interrupted set-up never leaves half a prompt.
            partial.replace(target)
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
