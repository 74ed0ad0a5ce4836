"""The browser tests' pictures never change the checkout: they go where git ignores them,
and only `make screenshots` copies them over the README's pictures."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.e2e.conftest import SCREENSHOTS

REPO = Path(__file__).resolve().parents[2]


def test_the_pictures_a_test_run_takes_are_ignored_by_git() -> None:
    picture = SCREENSHOTS / "desk.png"
    ignored = subprocess.run(["git", "check-ignore", "--quiet", "--no-index", str(picture)],
                             cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{picture} would show up in git status"
