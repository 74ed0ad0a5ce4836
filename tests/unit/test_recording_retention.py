"""recordings.keep_days: recordings of calls older than the retention period go, the
calls stay in the history, and the audit log says so."""

from __future__ import annotations

from pathlib import Path

from handoff.recordings import CACHE_SUFFIX, expire_recordings
from handoff.store import Store
from tests.store_fixtures import FakeClock
from tests.tools_fixtures import finished_call, write_wav


async def test_recordings_past_the_retention_period_go_and_their_calls_stay(
    store: Store, clock: FakeClock, tmp_path: Path,
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    old_wav = write_wav(recordings / "call-old.wav", seconds=0.1)
    old_wav.with_name("call-old" + CACHE_SUFFIX).write_text("{}")
    outside = write_wav(tmp_path / "elsewhere.wav", seconds=0.1)  # not ours to delete
    old = await finished_call(store, number="+1", recording=old_wav)
    odd = await finished_call(store, number="+2", recording=outside)
    clock.advance(20 * 86400)
    recent_wav = write_wav(recordings / "call-new.wav", seconds=0.1)
    recent = await finished_call(store, number="+3", recording=recent_wav)
    now = clock.advance(15 * 86400)  # old: 35 days ago, recent: 15

    assert await expire_recordings(store, recordings, 0, now) == 0  # 0 keeps them all
    assert old_wav.exists()

    assert await expire_recordings(store, recordings, 30, now) == 2
    assert not old_wav.exists()
    assert not old_wav.with_name("call-old" + CACHE_SUFFIX).exists()
    assert outside.exists() and recent_wav.exists()
    async with store.transaction() as tx:
        assert (await tx.calls.get(old)).recording_path is None
        assert (await tx.calls.get(odd)).recording_path is None
        assert (await tx.calls.get(recent)).recording_path == str(recent_wav)
        (line,) = await tx.audit.recent()
    assert (line.actor, line.action, line.subject) == ("retention", "recordings_expired", "2")
    assert line.detail["keep_days"] == 30

    # Nothing more is due: a second pass changes nothing and writes no audit line.
    assert await expire_recordings(store, recordings, 30, now) == 0
    async with store.transaction() as tx:
        assert len(await tx.audit.recent()) == 1
