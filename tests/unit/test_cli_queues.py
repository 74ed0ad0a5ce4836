"""`switchboard queue`: add, edit, remove, list, each audited as "cli"; members with their
levels, the assistants and topics routed to the queue; bad input refused with its reason,
nothing written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from handoff.queues import Strategy
from handoff.store import Store, create_store_engine
from web import queues
from web.cli import main


def _read(url: str) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, str]]]:
    """Every queue listed, as the admin page shows it, and the audit lines."""

    async def read() -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, str]]]:
        engine = create_store_engine(url)
        try:
            async with Store(engine).transaction() as tx:
                listed = {q.name: await queues.view(tx, q) for q in await tx.queues.listed()}
                audit = [(e.actor, e.action, e.subject) for e in await tx.audit.recent(100)]
            return listed, audit
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_DEMO__ENABLED", "false")
    database = f"sqlite:///{tmp_path / 'switchboard.db'}"
    for login in ("ada", "bea"):
        assert main(["user", "add", login, "--role", "agent", "--phone", "desk"]) == 0
    assert main(["assistant", "add", "sales", "--number", "2100", "--engine", "builtin"]) == 0
    return database


def test_a_queue_is_added_changed_listed_and_removed_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert main(["queue", "add", "support", "--strategy", "round_robin", "--member", "ada:4",
                 "--member", "bea", "--assistant", "sales", "--topic", "billing",
                 "--ring", "12", "--away-after", "2"]) == 0
    listed, audit = _read(url)
    support = listed["support"]
    assert (support["strategy"], support["ring_s"], support["no_answer_limit"]) == (
        Strategy.ROUND_ROBIN.value, 12, 2)
    assert support["members"] == [{"login": "ada", "level": 4}, {"login": "bea", "level": 3}]
    assert (support["assistants"], support["topics"]) == (["sales"], ["billing"])
    assert main(["queue", "edit", "support", "--strategy", "longest_idle", "--member",
                 "bea:5"]) == 0
    assert main(["queue", "list"]) == 0
    out = capsys.readouterr().out
    assert "support\tlongest_idle" in out and "bea:5\t" in out
    assert main(["queue", "remove", "support"]) == 0
    listed, audit = _read(url)
    assert listed == {}
    assert audit[:3] == [("cli", "queue_removed", "queue:support"),
                         ("cli", "queue_changed", "queue:support"),
                         ("cli", "queue_added", "queue:support")]


@pytest.mark.parametrize(("arguments", "reason"), [
    (["--member", "zed"], "no person 'zed'"),
    (["--member", "ada:0"], "a level is 1 to 5"),
    (["--assistant", "nobody"], "no assistant 'nobody'"),
    (["--max-wait", "0"], "max_wait_s: a whole number, 1 to 3600"),
])
def test_a_bad_queue_is_refused_with_its_reason_and_nothing_written(
    url: str, capsys: pytest.CaptureFixture[str], arguments: list[str], reason: str,
) -> None:
    capsys.readouterr()
    assert main(["queue", "add", "support", *arguments]) == 2
    assert reason in capsys.readouterr().err
    assert _read(url)[0] == {}
    assert main(["queue", "edit", "nosuch", "--ring", "5"]) == 2
    assert "no queue 'nosuch'" in capsys.readouterr().err


def test_a_queues_business_hours_are_set_checked_and_cleared_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["queue", "add", "support", "--hours", "Mon-Fri 9:00-17:00",
                 "--holiday", "2026-12-25"]) == 0
    support = _read(url)[0]["support"]
    assert (support["hours"], support["holidays"]) == (["mon-fri 09:00-17:00"], ["2026-12-25"])
    capsys.readouterr()
    assert main(["queue", "edit", "support", "--hours", "fri 22:00-06:00"]) == 2
    assert "two spans" in capsys.readouterr().err
    assert _read(url)[0]["support"]["hours"] == ["mon-fri 09:00-17:00"]
    assert main(["queue", "edit", "support", "--always-open"]) == 0
    listed, audit = _read(url)
    assert (listed["support"]["hours"], listed["support"]["holidays"]) == ([], [])
    assert ("cli", "queue_changed", "queue:support") in audit


def test_a_queue_has_its_own_wrap_up_time_or_the_sites_and_a_bad_one_is_refused(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["queue", "add", "orders", "--member", "ada", "--wrap-up", "45"]) == 0
    assert "wrap-up 45s" in capsys.readouterr().out
    assert main(["queue", "edit", "orders", "--wrap-up", "601"]) == 2
    assert "wrap_up_s: a whole number of seconds, 0 to 600" in capsys.readouterr().err
    assert _read(url)[0]["orders"]["wrap_up_s"] == 45  # nothing written
    assert main(["queue", "edit", "orders", "--wrap-up", "default"]) == 0
    listed, _ = _read(url)
    assert listed["orders"]["wrap_up_s"] is None
    assert "wrap-up default" in capsys.readouterr().out
