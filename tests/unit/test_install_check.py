"""`switchboard config check` on a whole installation: settings, then the database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from handoff.agents import AgentRole
from handoff.store import Store, create_store_engine, migrations, pending_migrations
from handoff.store.schema import alembic_config, upgrade_to_head
from web.cli import main

DEMO_OFF = ["--set", "demo.enabled=false"]


def check_now(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "config", "check", "--json"])
    return code, json.loads(capsys.readouterr().out)


async def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run `config check --json` as the command line does (its own event loop)."""
    return await asyncio.to_thread(check_now, capsys, *argv)


def findings(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["severity"], f["check"]) for f in report["findings"]]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    return tmp_path


def test_a_fresh_installation_has_no_database_and_the_check_creates_none(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = check_now(capsys)
    assert code == 0 and report["ok"]
    assert findings(report) == [("warning", "database")]
    assert "no database yet (not created by this check)" in report["findings"][0]["message"]
    assert list(data_dir.iterdir()) == []


async def test_an_empty_database_is_reported_and_left_without_tables(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite: an empty file; PostgreSQL: a database (schema) nobody has migrated.
    if store_url.startswith("sqlite"):
        await asyncio.to_thread(Path(store_url.removeprefix("sqlite:///")).touch)
    monkeypatch.setenv("SWITCHBOARD_DATABASE__URL", store_url)
    code, report = await check(capsys)
    assert code == 0
    assert findings(report) == [("warning", "database")]
    assert "no tables yet; the next `switchboard run`" in report["findings"][0]["message"]
    engine = create_store_engine(store_url)
    try:
        assert await pending_migrations(engine) == migrations()
    finally:
        await engine.dispose()


async def test_a_database_behind_the_migrations_is_not_upgraded_by_the_check(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{data_dir / 'switchboard.db'}"
    older, newest = migrations()[-2:]

    def upgrade_to_older(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, older)

    engine = create_store_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade_to_older)
        code, report = await check(capsys)
        assert code == 0
        assert f"1 schema migrations behind ({newest})" in report["findings"][0]["message"]
        assert await pending_migrations(engine) == (newest,)
        # A revision this code does not know: a newer Switchboard wrote this database.
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        code, report = await check(capsys)
        assert code == 1 and not report["ok"]
        assert "written by a newer Switchboard" in report["findings"][0]["message"]
    finally:
        await engine.dispose()


async def test_people_who_cannot_work_are_named_and_an_error_fails_the_check(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = create_store_engine(f"sqlite:///{data_dir / 'switchboard.db'}")
    await upgrade_to_head(engine)
    async with Store(engine).transaction() as tx:
        # Made outside `user add`: an account without a password, one without a SIP one.
        await tx.agents.create(login="ada", display_name="Ada", sip_user="agent-ada",
                               sip_password="s" * 16, role=AgentRole.AGENT)
        await tx.agents.create(login="bob", display_name="Bob", sip_user="agent-bob",
                               sip_password="", password_hash="x")
    await engine.dispose()
    code, report = await check(capsys, *DEMO_OFF)
    assert code == 1 and not report["ok"]
    assert report["database"]["people"] == 2
    assert findings(report) == [
        ("error", "pbx_configuration"), ("error", "agents_without_phones"),
        ("warning", "people_without_passwords"), ("warning", "nobody_to_sign_in"),
        ("warning", "no_trunks")]
    messages = [f["message"] for f in report["findings"]]
    assert "agents[1].sip_password" in messages[0]
    assert messages[1].startswith("bob has no SIP account")
    assert "switchboard user passwd ada" in messages[2]
    assert "no enabled admin" in messages[3]


async def test_a_persons_sip_account_clashing_with_a_trunk_from_the_environment_is_an_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(
        main, [*DEMO_OFF, "user", "add", "admin", "--role", "admin"]) == 0
    assert await asyncio.to_thread(
        main, [*DEMO_OFF, "user", "add", "bea", "--role", "agent", "--phone", "desk"]) == 0
    capsys.readouterr()
    code, report = await check(capsys, *DEMO_OFF)
    assert (code, findings(report)) == (0, [("warning", "no_trunks")])
    # A trunk named like bea's SIP account: two PJSIP endpoints would share one name.
    monkeypatch.setenv("SWITCHBOARD_TRUNKS__0__NAME", "agent-bea")
    code, report = await check(capsys, *DEMO_OFF)
    assert code == 1
    assert findings(report) == [("error", "pbx_configuration"),
                                ("warning", "trunks_without_allowed_patterns")]
    assert "'agent-bea' is used twice" in report["findings"][0]["message"]


async def test_the_text_report_ends_with_the_verdict(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, [*DEMO_OFF, "user", "add", "cy", "--role", "agent",
                                          "--phone", "desk"]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, [*DEMO_OFF, "config", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("settings ok; rendered 20 Asterisk files")
    assert out[1].endswith("switchboard.db: 1 person, 0 assistants")
    assert out[2].startswith("warning  nobody_to_sign_in: nobody can manage")
    assert out[-1] == "installation ok (2 warnings)"


def test_wrong_settings_in_json_are_a_finding_and_exit_2(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--set", "server.port=0", "config", "check", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["findings"][0]["message"].startswith("server.port: 0 is not a port")


async def test_assistants_without_numbers_or_engines_and_trunks_that_let_nothing_out(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["user", "add", "admin", "--role", "admin"],
                 ["assistant", "add", "idle", "--engine", "127.0.0.1:9092"],
                 ["assistant", "add", "sales", "--number", "2100", "--engine", "builtin"],
                 ["trunk", "add", "itsp", "--host", "192.0.2.10"]):
        assert await asyncio.to_thread(main, [*DEMO_OFF, *argv]) == 0, argv
    capsys.readouterr()
    code, report = await check(capsys, *DEMO_OFF)
    assert code == 0
    assert findings(report) == [("warning", "assistants_without_numbers"),
                                ("warning", "trunks_without_allowed_patterns")]
    assert "assistant idle answers no number" in report["findings"][0]["message"]
    assert "trunk itsp allows no number out" in report["findings"][1]["message"]
    # The assistant that takes the numbers nobody answers needs none of its own; one
    # that is not there is an error.
    code, report = await check(capsys, *DEMO_OFF, "--set", "routing.unknown_numbers=idle")
    assert findings(report) == [("warning", "trunks_without_allowed_patterns")]
    code, report = await check(capsys, *DEMO_OFF, "--set", "routing.unknown_numbers=nobody")
    assert code == 1
    assert ("error", "unknown_numbers_assistant") in findings(report)
    assert await asyncio.to_thread(
        main, [*DEMO_OFF, "trunk", "edit", "itsp", "--allow", "_0[1-9]XXXXXXXX"]) == 0
    capsys.readouterr()
    code, report = await check(capsys, *DEMO_OFF, "--set", "routing.unknown_numbers=idle")
    assert (code, findings(report)) == (0, [])
