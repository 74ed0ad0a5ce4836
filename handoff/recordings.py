"""Recordings after the call: the waveform a person scrubs through.

The peaks are computed once per recording with NumPy and kept next to it
(``call-<id>.peaks.json``), keyed by the recording's size and modification time, so a
page view reads a few kilobytes instead of decoding minutes of audio again. A
recording replaced in place (same name, new content) gets new peaks.
"""

from __future__ import annotations

import asyncio
import json
import os
import wave
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from handoff.store import Store
from pbx.spool import Spool

# Enough columns for a wide screen; the page scales them to its canvas.
DEFAULT_BUCKETS = 1000
CACHE_SUFFIX = ".peaks.json"


class NotARecording(ValueError):
    pass


async def keep_recording(name: str, spool: Spool | None, recordings: Path | None) -> str:
    """Move a finished recording out of Asterisk's spool into our data folder.

    Asterisk only writes into its own tree (embedded: inside its chroot; an Asterisk
    someone else runs: on its own host); the product keeps recordings in its data
    folder so a rebuilt Asterisk never takes them along. Returns the path to store (the
    bare name when there is nowhere to move it: the file stays with Asterisk).
    """
    if recordings is None or spool is None:
        return name
    target = recordings / name
    await spool.take(name, target)
    return str(target)


async def discard_recording(name: str, spool: Spool | None) -> None:
    """Delete a recording nobody needs from Asterisk's spool (if it is reachable)."""
    if spool is not None:
        await spool.discard(name)


# Recordings a retention pass lets go per transaction: a long-unpruned archive is worked
# through in slices, so the calls being written meanwhile never wait on one big delete.
EXPIRY_BATCH = 200


async def expire_recordings(
    store: Store, recordings: Path, keep_days: int, now: datetime,
) -> int:
    """Delete the recordings of calls that ended more than keep_days before now (0: keep
    them all); returns how many went. The call stays in the history without its
    recording, and the audit log says how many went and up to when.

    Only files inside the recordings folder are deleted, whatever a row says; a file
    that is already gone is simply forgotten.
    """
    if keep_days <= 0:
        return 0
    cutoff = now - timedelta(days=keep_days)
    gone = 0
    while True:
        async with store.transaction() as tx:
            calls = await tx.calls.recorded_before(cutoff, EXPIRY_BATCH)
            for call in calls:
                await asyncio.to_thread(_delete_recording, call.recording_path or "",
                                        recordings)
                await tx.calls.forget_recording(call.id)
            if calls:
                await tx.audit.record("retention", "recordings_expired", str(len(calls)), {
                    "keep_days": keep_days, "ended_before": cutoff.isoformat()})
        gone += len(calls)
        if len(calls) < EXPIRY_BATCH:
            return gone


def _delete_recording(recording_path: str, recordings: Path) -> None:
    path = Path(recording_path)
    if path.is_absolute() and path.resolve().is_relative_to(recordings.resolve()):
        path.unlink(missing_ok=True)
        path.with_name(path.stem + CACHE_SUFFIX).unlink(missing_ok=True)


def compute_peaks(path: Path, buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
    """Min and max of each of `buckets` equal slices of the recording, in -1..1."""
    try:
        with wave.open(str(path)) as wav:
            if wav.getsampwidth() != 2:
                raise NotARecording(f"{path.name}: {8 * wav.getsampwidth()}-bit audio")
            rate, channels = wav.getframerate(), wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise NotARecording(f"{path.name}: {exc}") from exc
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    frames = len(samples)
    count = max(1, min(buckets, frames))
    if frames == 0:
        lows = highs = np.zeros(1)
    else:
        # Equal slices; the last takes the remainder. reduceat keeps this one pass in C.
        edges = (np.arange(count) * frames) // count
        lows = np.minimum.reduceat(samples, edges) / 32768.0
        highs = np.maximum.reduceat(samples, edges) / 32768.0
    return {
        "duration_s": frames / rate if rate else 0.0,
        "rate": rate,
        "buckets": count,
        "peaks": [[round(float(lo), 4), round(float(hi), 4)]
                  for lo, hi in zip(lows, highs, strict=True)],
    }


def cached_peaks(path: Path, buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
    """The peaks of `path`, from the cache beside it when it is still current."""
    stat = path.stat()
    source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "buckets": buckets}
    cache = path.with_name(path.stem + CACHE_SUFFIX)
    try:
        kept = json.loads(cache.read_text())
        if kept.get("source") == source:
            return dict(kept["waveform"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, unreadable or from an older format: compute again
    waveform = compute_peaks(path, buckets)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"source": source, "waveform": waveform},
                              separators=(",", ":")))
    tmp.replace(cache)  # atomic: two page views at once never read a half-written file
    return waveform
