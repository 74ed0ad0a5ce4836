"""The `switchboard` command's answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from web.cli import main


def test_config_check_names_an_unknown_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--set", "asterisk.sip_prot=5070", "config", "check"]) == 2
    assert "asterisk.sip_prot: unknown setting" in capsys.readouterr().err


def test_config_check_passes_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check"]) == 0
    assert "rendered 12 Asterisk files" in capsys.readouterr().out


def test_config_render_needs_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SWITCHBOARD_ARI_PASSWORD", raising=False)
    assert main(["config", "render", "--out", str(tmp_path)]) == 2
    assert "SWITCHBOARD_ARI_PASSWORD must be set" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_doctor_json_reports_each_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"asterisk", "database", "browser", "dashboard", "tools"} <= set(report)
    assert report["dashboard"]["state"] == "not running"
    assert report["database"]["kind"] == "sqlite"
