"""Building the embedded Asterisk's tree: what a new user sees while mmdebstrap works, and
what a failure tells them. A script on PATH stands in for mmdebstrap (the real build is
what every integration run's cached tree came from)."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbx import rootfs

MIRROR = "http://deb.example/debian"

FAKE_MMDEBSTRAP = """#!/usr/bin/env bash
# Records its arguments, prints what the test wrote, exits with the status it set.
here="$(dirname "$0")"
printf '%s\\n' "$*" >>"$here/calls"
target="${@: -2:1}"
if [[ -e "$target" ]]; then echo "E: $target exists"; exit 9; fi
mkdir -p "$target/etc"
cat "$here/output"
exit "$(cat "$here/status")"
"""


@dataclass
class FakeMmdebstrap:
    folder: Path

    def will(self, output: list[str], status: int = 0) -> None:
        (self.folder / "output").write_text("".join(f"{line}\n" for line in output))
        (self.folder / "status").write_text(str(status))

    @property
    def runs(self) -> int:
        calls = self.folder / "calls"
        return len(calls.read_text().splitlines()) if calls.exists() else 0


@pytest.fixture
def mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMmdebstrap:
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    script = folder / "mmdebstrap"
    script.write_text(FAKE_MMDEBSTRAP)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # preflight's root check: as under make
    fake = FakeMmdebstrap(folder)
    fake.will([])
    return fake


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == rootfs.__name__]


# What mmdebstrap --verbose prints, shortened: its steps, apt's and dpkg's lines.
A_BUILD = [
    "I: automatically chosen format: directory",
    "I: running apt-get update...",
    "Get:1 http://deb.example/debian sid InRelease [202 kB]",
    "I: downloading packages with apt...",
    *(f"Get:{i} http://deb.example/debian sid/main amd64 pkg{i} 1.0 [10 kB]"
      for i in range(2, 62)),
    "Fetched 120 MB in 20s (6000 kB/s)",
    "I: extracting archives...",
    "I: installing essential packages...",
    *(f"Unpacking pkg{i} (1.0) ..." for i in range(30)),
    *(f"Setting up pkg{i} (1.0) ..." for i in range(30)),
    "I: installing remaining packages inside the chroot...",
    "I: cleaning package lists and apt cache...",
]


def test_a_build_says_each_step_and_counts_packages_instead_of_silence(
    mmdebstrap: FakeMmdebstrap, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mmdebstrap.will(A_BUILD)
    caplog.set_level(logging.INFO, logger=rootfs.__name__)
    built = rootfs.ensure(cache, MIRROR)
    assert rootfs.is_complete(built.path, MIRROR)
    lines = said(caplog)
    assert lines[0].startswith(f"building the embedded Asterisk (Debian sid, about 350 MB "
                               f"from {MIRROR}) into {cache / 'asterisk-rootfs'}")
    assert lines[1:-1] == [
        "  mmdebstrap: automatically chosen format: directory",
        "  mmdebstrap: running apt-get update...",
        "  mmdebstrap: downloading packages with apt...",
        "  mmdebstrap: fetched 25 packages",
        "  mmdebstrap: fetched 50 packages",
        "  mmdebstrap: Fetched 120 MB in 20s (6000 kB/s)",
        "  mmdebstrap: extracting archives...",
        "  mmdebstrap: installing essential packages...",
        "  mmdebstrap: set up 25 packages",
        "  mmdebstrap: installing remaining packages inside the chroot...",
        "  mmdebstrap: cleaning package lists and apt cache...",
    ]
    assert lines[-1].startswith("built the embedded Asterisk in ")


def test_the_second_run_builds_nothing_and_says_nothing(
    mmdebstrap: FakeMmdebstrap, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mmdebstrap.will(A_BUILD)
    built = rootfs.ensure(cache, MIRROR)
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger=rootfs.__name__)
    assert rootfs.ensure(cache, MIRROR) == built
    assert mmdebstrap.runs == 1
    assert said(caplog) == []


def test_a_half_built_tree_is_rebuilt_not_used(
    mmdebstrap: FakeMmdebstrap, cache: Path
) -> None:
    (cache / "asterisk-rootfs.partial/etc").mkdir(parents=True)
    (cache / "asterisk-rootfs/usr").mkdir(parents=True)  # no marker: interrupted earlier
    # The fake refuses a target that exists: the interrupted tree must be gone first.
    built = rootfs.ensure(cache, MIRROR)
    assert mmdebstrap.runs == 1
    assert rootfs.is_complete(built.path, MIRROR)
    assert not (cache / "asterisk-rootfs.partial").exists()


@pytest.mark.parametrize(
    ("output", "status", "advice"),
    [
        (["I: running apt-get update...",
          "E: Failed to fetch http://deb.example/debian/dists/sid/InRelease  "
          "Could not resolve 'deb.example'"], 1,
         f"mmdebstrap failed fetching from {MIRROR}: check the network (and a proxy, if one "
         "is needed), or set asterisk.mirror to a Debian mirror you can reach."),
        (["I: extracting archives...",
          "tar: ./usr/lib/x86_64-linux-gnu/libc.so.6: Cannot write: No space left on device"], 1,
         "mmdebstrap ran out of disk space in {cache}: free about 1 GB there, or set "
         "SWITCHBOARD_CACHE to a folder with room."),
        (["I: installing essential packages...", "E: dpkg failed"], 2,
         "mmdebstrap exited with status 2; run it again, and if it fails the same way install "
         "Asterisk >= 20 yourself (or set SWITCHBOARD_ASTERISK)."),
    ],
)
def test_a_failed_build_names_the_step_says_what_to_do_and_leaves_no_tree(
    mmdebstrap: FakeMmdebstrap, cache: Path, output: list[str], status: int, advice: str
) -> None:
    mmdebstrap.will(output, status)
    with pytest.raises(rootfs.RootfsError) as caught:
        rootfs.ensure(cache, MIRROR)
    message = str(caught.value)
    assert message.startswith("building the embedded Asterisk failed: "
                              + advice.format(cache=cache))
    assert message.endswith(f"mmdebstrap's last lines:\n  {output[0]}\n  {output[1]}")
    assert not (cache / "asterisk-rootfs.partial").exists()
    assert rootfs.find_built(cache, MIRROR) is None
