"""What the caller is told when a person joins, on the fake ARI: each moment's words
(checked as an admin writes them), said on the caller's own channel at a transfer and
at a handover, and nothing where the assistant has no words
(tests/integration/test_announcements.py hears them on real Asterisk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff.assistants import check_announcements
from handoff.calls import CallOutcome
from pbx.spool import SoundFolder
from tests.unit.test_live_calls import Floor, _outcome_is, floor  # noqa: F401
from tests.waiting import until


def test_announcements_are_kept_per_moment_and_empty_means_silence() -> None:
    assert check_announcements({"transfer": "  One  moment. ", "handover": ""}) == {
        "transfer": "One moment."}
    with pytest.raises(ValueError, match="one of handover, takeover, transfer"):
        check_announcements({"hold": "x"})
    with pytest.raises(ValueError, match="300 characters"):
        check_announcements({"handover": "x" * 301})


async def _announcing(floor: Floor, tmp_path: Path, words: dict[str, str]) -> None:  # noqa: F811
    async with floor.store.transaction() as tx:
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_announcements(receptionist.id, words)
    floor.live.control.sounds = SoundFolder(tmp_path / "sounds", "/sounds")


def _told(floor: Floor, caller: str, moment: str) -> list[str]:  # noqa: F811
    return [media for target, media in floor.ari.played
            if target == f"channel:{caller}" and media.startswith(f"sound:/sounds/{moment}-")]


async def test_a_transfer_is_announced_to_the_caller_and_the_handover_is_not(
    floor: Floor, tmp_path: Path,  # noqa: F811
) -> None:
    await _announcing(floor, tmp_path, {"transfer": "I am putting you through to a colleague."})
    caller, live, _ = await floor.handed_to_ada()
    transfer = await floor.live.control.transfer(live.call_id, floor.ada, floor.bob, "VIP")
    await floor.live.control.accept(transfer, floor.bob)

    async def told() -> bool:
        return bool(_told(floor, caller, "transfer"))

    await until(told)
    assert not _told(floor, caller, "handover")  # no words for it: silence
    assert list((tmp_path / "sounds").glob("transfer-receptionist-*.sln"))
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AGENT))
