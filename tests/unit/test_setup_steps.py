"""`make`'s set-up steps tell what they install and how far they are, in a few lines; a
second run is silent; a failure says which step and what to do. apt-get, dpkg and id are
scripts on PATH here: the recipe is the Makefile's own, run by make."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pbx.setup_progress import Progress, main

ROOT = Path(__file__).resolve().parents[2]

FAKES = {
    # Installed: everything but the packages named missing-*.
    "dpkg": 'case "$2" in missing-*) exit 1;; *) exit 0;; esac\n',
    "id": "echo 0\n",  # as root, as `make run` is on a fresh machine
    "apt-get": """echo "apt-get $*" >>"$(dirname "$0")/calls"
if [ "$1" = update ]; then
  echo "Get:1 http://deb.example/debian trixie InRelease [140 kB]"
  echo "Fetched 9 MB in 1s (9000 kB/s)"
  echo "Reading package lists..."
  exit 0
fi
for pkg in "$@"; do
  case "$pkg" in missing-broken) echo "E: Unable to locate package missing-broken"; exit 100;; esac
done
for i in $(seq 1 30); do echo "Get:$i http://deb.example/debian trixie/main dep$i 1.0"; done
echo "Fetched 30 kB in 0s (300 kB/s)"
for i in $(seq 1 30); do echo "Unpacking dep$i (1.0) ..."; echo "Setting up dep$i (1.0) ..."; done
""",
}


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    for name, body in FAKES.items():
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\n{body}")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def make_apt(fake_bin: Path, packages: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "apt", f"PACKAGES={packages}"],
        env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_apt_step_says_what_it_installs_and_counts_instead_of_a_line_per_package(
    fake_bin: Path,
) -> None:
    done = make_apt(fake_bin, "bash missing-a missing-b")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "installing Debian packages: missing-a missing-b",
        "  apt-get: Fetched 9 MB in 1s (9000 kB/s)",
        "  apt-get: fetched 25 packages",
        "  apt-get: Fetched 30 kB in 0s (300 kB/s)",
        "  apt-get: set up 25 packages",
    ]
    calls = (fake_bin / "calls").read_text().splitlines()
    assert calls[-1] == "apt-get install -y --no-install-recommends missing-a missing-b"


def test_the_apt_step_is_silent_when_everything_is_installed(fake_bin: Path) -> None:
    done = make_apt(fake_bin, "bash coreutils")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not (fake_bin / "calls").exists()


def test_a_failed_apt_step_shows_apts_error_and_says_what_to_do(fake_bin: Path) -> None:
    done = make_apt(fake_bin, "missing-broken")
    assert done.returncode != 0
    lines = done.stdout.splitlines()
    assert "  apt-get: E: Unable to locate package missing-broken" in lines
    assert lines[-1].startswith("apt-get install missing-broken failed (its errors are "
                                "above): check the network and that these packages exist")


def test_pip_is_told_in_a_few_lines() -> None:
    said: list[str] = []
    progress = Progress("pip", said.append)
    for i in range(60):
        progress.line(f"Collecting pkg{i}>=1.0")
        progress.line(f"  Downloading pkg{i}-1.0-py3-none-any.whl (10 kB)")
    progress.line("Successfully installed " + " ".join(f"pkg{i}-1.0" for i in range(60)))
    assert said[:2] == ["  pip: collected 25 packages", "  pip: collected 50 packages"]
    assert said[2].startswith("  pip: Successfully installed pkg0-1.0 pkg1-1.0")
    assert said[2].endswith("…") and len(said) == 3


def test_the_filter_names_its_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["yum"]) == 2
    assert "apt-get|mmdebstrap|pip" in capsys.readouterr().err
