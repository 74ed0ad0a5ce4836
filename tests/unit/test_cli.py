"""The `switchboard` command's answers to bad input."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from handoff.agents import AgentRole, EndpointKind
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Agent, AuditEvent, TrunkRecord
from web.cli import main
from web.dashboard.passwords import Passwords


def test_config_check_names_an_unknown_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--set", "asterisk.sip_prot=5070", "config", "check"]) == 2
    assert "asterisk.sip_prot: unknown setting" in capsys.readouterr().err


def test_config_check_passes_with_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A data folder of its own: the check reads the installation's database too.
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    assert main(["config", "check"]) == 0
    assert "rendered 20 Asterisk files" in capsys.readouterr().out


def test_config_render_needs_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SWITCHBOARD_ARI_PASSWORD", raising=False)
    assert main(["config", "render", "--out", str(tmp_path)]) == 2
    assert "SWITCHBOARD_ARI_PASSWORD must be set" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_browser_benchmark_without_playwright_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As on a server installed without the `bench` extra: Playwright cannot be imported.
    monkeypatch.setitem(sys.modules, "playwright", None)
    monkeypatch.delitem(sys.modules, "web.bench.browser_handoff", raising=False)
    assert main(["bench", "handoff", "--agent", "browser", "--calls", "1"]) == 2
    assert "pip install 'switchboard[bench]'" in capsys.readouterr().err


def test_the_cluster_benchmark_refuses_no_calls_or_a_lease_out_of_range(
    capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before anything starts (no namespace, no PostgreSQL, no node).
    for args in (["--calls", "0"], ["--lease", "2"], ["--lease", "301"]):
        assert main(["bench", "cluster", *args]) == 2
        assert "--calls is at least 1 and --lease 3 to 300" in capsys.readouterr().err


def test_a_soak_holds_an_open_line_and_is_refused_otherwise(
    capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--line", "ring", "--soak", "3"], ["--line", "open", "--soak", "0"],
                 ["--line", "open", "--soak", "3", "--every", "-1"]):
        assert main(["bench", "handoff", "--agent", "browser", *args]) == 2
        assert "--soak holds one open line" in capsys.readouterr().err
    assert main(["bench", "handoff", "--soak"]) == 2  # a desk phone has no line to hold
    assert "--line and --soak are for --agent browser" in capsys.readouterr().err


def test_the_cross_node_benchmark_measures_desk_phones_alone(
    capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--agent", "browser"], ["--baseline", "queue"]):
        assert main(["bench", "handoff", "--cross-node", *args]) == 2
        assert "--cross-node measures SIP desk phones" in capsys.readouterr().err


def test_doctor_json_reports_each_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"asterisk", "database", "browser", "dashboard", "tools"} <= set(report)
    assert report["dashboard"]["state"] == "not running"
    assert report["database"]["kind"] == "sqlite"


def test_agent_passwd_sets_a_password_that_signs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"

    async def seed() -> None:
        engine = create_store_engine(url)
        await upgrade_to_head(engine)
        async with Store(engine).transaction() as tx:
            await tx.agents.create(login="ada", display_name="Ada", sip_user="agent-ada",
                                   sip_password="x" * 16)
        await engine.dispose()

    async def stored_hash() -> str | None:
        engine = create_store_engine(url)
        async with Store(engine).transaction() as tx:
            agent = await tx.agents.by_login("ada")
        await engine.dispose()
        return agent.password_hash if agent else None

    asyncio.run(seed())
    assert main(["agent", "passwd", "ada"]) == 0
    password = capsys.readouterr().out.strip().split(": ", 1)[1]
    verdict = asyncio.run(Passwords().verify(asyncio.run(stored_hash()), password))
    assert verdict.ok
    assert main(["agent", "passwd", "nobody"]) == 2
    assert "no agent with login 'nobody'" in capsys.readouterr().err


def _stored(url: str, login: str) -> Agent | None:
    async def read() -> Agent | None:
        engine = create_store_engine(url)
        try:
            async with Store(engine).transaction() as tx:
                return await tx.agents.by_login(login)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_the_first_admin_of_a_fresh_install_comes_from_user_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real installation: the demo is off, so nobody is seeded and the database is new.
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    demo_off = ["--set", "demo.enabled=false"]
    assert main([*demo_off, "user", "add", "admin", "--role", "admin"]) == 0
    password = capsys.readouterr().out.splitlines()[0].split(": ", 1)[1]
    admin = _stored(url, "admin")
    assert admin is not None and admin.role is AgentRole.ADMIN and admin.enabled
    assert asyncio.run(Passwords().verify(admin.password_hash, password)).ok
    # A desk phone's person gets their SIP account printed for the phone's set-up.
    assert main([*demo_off, "user", "add", "bea", "--role", "agent", "--phone", "desk",
                 "--name", "Bea Desk"]) == 0
    out = capsys.readouterr().out
    bea = _stored(url, "bea")
    assert bea is not None and bea.endpoint_kind is EndpointKind.DESKPHONE
    assert f"desk phone SIP account: agent-bea / {bea.sip_password}" in out
    assert main([*demo_off, "user", "add", "bea", "--role", "agent"]) == 2
    assert "there is already an agent 'bea'" in capsys.readouterr().err
    assert main([*demo_off, "user", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "admin\tadmin\tbrowser\tenabled\tadmin", "bea\tagent\tdesk\tenabled\tBea Desk"]


def test_user_disable_enable_remove_keep_an_admin_and_the_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    assert main(["user", "add", "admin", "--role", "admin"]) == 0
    assert main(["user", "add", "cy", "--role", "agent"]) == 0
    capsys.readouterr()
    assert main(["user", "disable", "admin"]) == 2
    assert "last enabled admin" in capsys.readouterr().err
    assert main(["user", "disable", "cy"]) == 0
    cy = _stored(url, "cy")
    assert cy is not None and not cy.enabled
    assert main(["user", "enable", "cy"]) == 0
    assert main(["user", "remove", "cy"]) == 0
    capsys.readouterr()
    assert main(["user", "list"]) == 0
    assert "cy" not in capsys.readouterr().out
    assert _stored(url, "cy") is not None  # the row stays for the history
    assert main(["user", "enable", "cy"]) == 2
    assert "no agent with login 'cy'" in capsys.readouterr().err


def test_user_rename_keeps_the_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    assert main(["user", "add", "cy", "--role", "agent"]) == 0
    assert main(["user", "rename", "cy", "Cyrille Dubois"]) == 0
    cy = _stored(url, "cy")
    assert cy is not None and cy.display_name == "Cyrille Dubois" and cy.sip_user == "agent-cy"
    capsys.readouterr()
    assert main(["user", "rename", "cy", "  "]) == 2
    assert "display_name is 1-128 characters" in capsys.readouterr().err
    assert main(["user", "rename", "nobody", "X"]) == 2


def test_user_open_line_is_for_desk_phones_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    assert main(["user", "add", "cy", "--role", "agent", "--phone", "desk"]) == 0
    assert main(["user", "add", "di", "--role", "agent"]) == 0
    assert main(["user", "open-line", "cy", "on"]) == 0
    cy = _stored(url, "cy")
    assert cy is not None and cy.open_line
    capsys.readouterr()
    assert main(["user", "open-line", "di", "on"]) == 2
    assert "browser phone" in capsys.readouterr().err
    assert main(["user", "open-line", "cy", "off"]) == 0
    cy = _stored(url, "cy")
    assert cy is not None and not cy.open_line


def _trunks_and_audit(url: str) -> tuple[list[TrunkRecord], list[AuditEvent]]:
    async def read() -> tuple[list[TrunkRecord], list[AuditEvent]]:
        engine = create_store_engine(url)
        try:
            async with Store(engine).transaction() as tx:
                return list(await tx.trunks.all()), list(await tx.audit.recent())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_trunk_commands_add_change_list_and_remove_with_the_password_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-pass\n"))
    assert main(["trunk", "add", "acme", "--host", "sip.acme.example", "--register",
                 "--username", "4420", "--password-stdin", "--caller-id", "+15550100",
                 "--allow", "_NXXNXXXXXX _1NXXNXXXXXX"]) == 0
    assert "trunk acme: added" in capsys.readouterr().out
    assert main(["trunk", "edit", "acme", "--international", "--codecs", "ulaw"]) == 0
    capsys.readouterr()
    assert main(["trunk", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.split("\t")[:3] == ["acme", "store", "register"]
    assert "international" in listed and "_NXXNXXXXXX,_1NXXNXXXXXX" in listed
    [row], audit = _trunks_and_audit(url)
    assert (row.password, row.codecs, row.allow_international) == ("s3cret-pass", ["ulaw"],
                                                                    True)
    assert [(e.actor, e.action, e.subject) for e in audit] == [
        ("cli", "trunk_changed", "trunk:acme"), ("cli", "trunk_added", "trunk:acme")]
    assert audit[1].detail["password"] == "changed"
    assert main(["trunk", "remove", "acme"]) == 0
    assert _trunks_and_audit(url)[0] == []
    # The carrier's password went nowhere: not printed, not logged, not audited.
    printed = capsys.readouterr()
    assert "s3cret" not in printed.out + printed.err + caplog.text
    assert "s3cret" not in str([e.detail for e in _trunks_and_audit(url)[1]])


@pytest.mark.parametrize(("argv", "reason"), [
    (["trunk", "add", "acme", "--host", "h", "--register", "--username", "u"],
     "a registering trunk needs a username and a password"),
    (["trunk", "add", "carrier", "--host", "h"], "'carrier' is a trunk of the settings file"),
    (["trunk", "edit", "nope", "--premium"], "no stored trunk 'nope'"),
    (["trunk", "add", "b", "--host", "h", "--allow", "_9X!"], "not a strict number pattern"),
])
def test_trunk_commands_refuse_bad_input_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str], reason: str,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_DEMO__ENABLED", "false")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    config = tmp_path / "sb.toml"
    config.write_text("[[trunks]]\nname = 'carrier'\nhost = '192.0.2.1'\n")
    assert main(["--config", str(config), *argv]) == 2
    assert reason in capsys.readouterr().err
