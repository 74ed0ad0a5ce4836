"""`switchboard systemd render`: a unit systemd accepts, running the product as it was
rendered, as the account its Asterisk allows."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pbx import rootfs, runtime
from tests.systemd_unit import unit_settings
from web import cli, systemd


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The embedded Asterisk, as `switchboard setup` left it in a cache folder."""
    cache = tmp_path / "cache"
    found = runtime.Installation(kind="embedded", version="Asterisk 22.5.0",
                                 root=rootfs.Rootfs(cache / "asterisk-rootfs"))
    monkeypatch.setattr(runtime, "locate", lambda *args, **kwargs: found)
    return cache


@pytest.fixture
def host_asterisk(monkeypatch: pytest.MonkeyPatch) -> None:
    found = runtime.Installation(kind="binary", version="Asterisk 22.5.0",
                                 binary=Path("/usr/sbin/asterisk"))
    monkeypatch.setattr(runtime, "locate", lambda *args, **kwargs: found)


def verify(unit: Path) -> None:
    """systemd's own check: a bad or unknown setting is only a warning, so none may show."""
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                             text=True, timeout=60, cwd=unit.parent, check=False)
    assert (checked.returncode, checked.stderr) == (0, "")


def render(tmp_path: Path, *args: str, user: str = "root") -> tuple[int, Path]:
    out = tmp_path / "units"
    code = cli.main([*args, "systemd", "render", "--out", str(out), "--user", user])
    return code, out / "switchboard.service"


def test_the_root_unit_restarts_the_controller_alone_and_bounds_its_capabilities(
    embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "etc" / "switchboard.toml"
    config.parent.mkdir()
    config.write_text('data_dir = "/var/lib/switchboard"\n')
    monkeypatch.chdir(tmp_path)
    code, unit = render(tmp_path, "--config", "etc/switchboard.toml",
                        "--set", "server.port=8443")
    assert code == 0
    verify(unit)
    service = unit_settings(unit)
    assert service["ExecStart"] == [
        f"{Path(sys.prefix).absolute()}/bin/switchboard --config {config} "
        "--set server.port=8443 run"]
    assert service["User"] == ["root"]
    assert service["WorkingDirectory"] == [str(tmp_path)]
    assert f"SWITCHBOARD_CACHE={embedded}" in service["Environment"]
    # A crashed controller comes back and re-attaches; its Asterisk is not killed.
    assert (service["KillMode"], service["Restart"]) == (["process"], ["always"])
    assert service["RestartPreventExitStatus"] == ["2"]  # a configuration error
    assert service["CapabilityBoundingSet"] == [" ".join(systemd.ROOT_CAPABILITIES)]


def test_a_host_asterisk_runs_under_an_unprivileged_unit_without_capabilities(
    host_asterisk: None, tmp_path: Path,
) -> None:
    code, unit = render(tmp_path, user="switchboard")
    assert code == 0
    verify(unit)
    service = unit_settings(unit)
    assert service["User"] == ["switchboard"]
    assert service["CapabilityBoundingSet"] == [""]
    assert "AmbientCapabilities" not in service
    assert not any(e.startswith("SWITCHBOARD_CACHE") for e in service["Environment"])


def test_a_dashboard_port_below_1024_gets_only_the_capability_to_bind_it(
    host_asterisk: None, tmp_path: Path,
) -> None:
    code, unit = render(tmp_path, "--set", "server.port=443", user="switchboard")
    assert code == 0
    verify(unit)
    service = unit_settings(unit)
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]


def test_settings_with_blanks_and_percent_signs_reach_the_command_unchanged(
    embedded: Path, tmp_path: Path,
) -> None:
    data = "/srv/call centre/100%"
    code, unit = render(tmp_path, "--set", f"data_dir={data}")
    assert code == 0
    verify(unit)
    command = unit_settings(unit)["ExecStart"][0].replace("%%", "%")
    assert shlex.split(command)[-3:] == ["--set", f"data_dir={data}", "run"]


def test_an_unprivileged_unit_for_the_embedded_asterisk_is_refused(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, unit = render(tmp_path, user="switchboard")
    assert code == 2
    assert "chroot, which only root can start" in capsys.readouterr().err
    assert not unit.exists()


@pytest.mark.parametrize("setting", [
    "database.url=postgresql://switchboard:hunter22@db/switchboard",
    "trunks.0.password=hunter22",
])
def test_a_secret_on_the_command_line_is_refused(
    embedded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str,
) -> None:
    code, unit = render(tmp_path, "--set", setting)
    assert code == 2
    err = capsys.readouterr().err
    assert "every user of the machine can read" in err and "hunter22" not in err
    assert not unit.exists()


def test_the_edge_unit_runs_edge_run_and_a_stop_reaches_kamailio_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text('[cluster]\ncarriers = ["198.51.100.7"]\n'
                      '[[cluster.nodes]]\nname = "node-a"\nsip_host = "192.0.2.11"\n')
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "units"
    assert cli.main(["--config", str(config), "systemd", "render", "--edge",
                     "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == [systemd.EDGE_UNIT]  # no node's unit here
    verify(out / systemd.EDGE_UNIT)
    service = unit_settings(out / systemd.EDGE_UNIT)
    assert service["ExecStart"] == [
        f"{Path(sys.prefix).absolute()}/bin/switchboard --config {config} edge run"]
    assert service["User"] == ["root"]  # Kamailio drops to its own account
    # The stop signal goes to the command, which stops Kamailio; what is left is killed.
    assert (service["KillMode"], service["Restart"]) == (["mixed"], ["always"])
    assert service["RestartPreventExitStatus"] == ["2"]  # files Kamailio refuses
    assert service["CapabilityBoundingSet"] == [" ".join(systemd.EDGE_CAPABILITIES)]


def test_with_dashboards_at_the_edge_haproxy_gets_a_unit_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kamailio and HAProxy restart apart: a dashboard proxy's restart must not lose the
    phones' registrations (Kamailio holds them in its memory)."""
    config = tmp_path / "switchboard.toml"
    config.write_text('[cluster]\ncarriers = ["198.51.100.7"]\nedge_https_port = 443\n'
                      '[[cluster.nodes]]\nname = "node-a"\nsip_host = "192.0.2.11"\n')
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "units"
    assert cli.main(["--config", str(config), "systemd", "render", "--edge",
                     "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [systemd.DASHBOARDS_UNIT,
                                                     systemd.EDGE_UNIT]
    verify(out / systemd.DASHBOARDS_UNIT)
    service = unit_settings(out / systemd.DASHBOARDS_UNIT)
    assert service["ExecStart"] == [
        f"{Path(sys.prefix).absolute()}/bin/switchboard --config {config} edge dashboards"]
    # Started by root, HAProxy takes its port and certificate and drops to its own
    # account; a stop reaches it through the command, and what is left is killed.
    assert service["User"] == ["root"]
    assert (service["KillMode"], service["Restart"]) == (["mixed"], ["always"])
    assert service["RestartPreventExitStatus"] == ["2"]  # a file HAProxy refuses
    assert service["CapabilityBoundingSet"] == [" ".join(systemd.EDGE_CAPABILITIES)]


def test_an_edge_unit_without_nodes_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert cli.main(["--config", str(empty), "systemd", "render", "--edge",
                     "--out", str(tmp_path / "units")]) == 2
    assert "cluster.nodes: no nodes" in capsys.readouterr().err
    assert not (tmp_path / "units").exists()
