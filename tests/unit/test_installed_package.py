"""Switchboard installed as a package (`pip install .`, not editable) works without the
checkout: it renders Asterisk's (and the cluster edge's) configuration from the templates
it installed, and its benchmarks import without the tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from web.cli import main

REPO = Path(__file__).resolve().parents[2]
# What the distribution is built from (pyproject.toml names the readme).
SOURCES = ("pyproject.toml", "README.md", "asterisk-config", "pbx", "handoff", "web")
SECRETS = {"SWITCHBOARD_ARI_PASSWORD": "ari-secret-1234",
           "SWITCHBOARD_AMI_SECRET": "ami-secret-1234"}

# Run in a Python that sees only the installed copy and the virtual environment's other
# packages: no site processing (so the editable install's path hook is not loaded) and
# no current folder on sys.path.
CHECK = """
import importlib.util, json, sys
sys.path[:0] = [sys.argv[1]]
sys.path.append(sys.argv[2])
from web.cli import main
imported_playwright = "playwright" in sys.modules
code = main(["config", "render", "--out", sys.argv[3]])
import web.bench.browser_handoff, web.bench.dashboard, web.bench.handoff
import handoff, pbx, web
from pbx.kamailio_config import EdgeNode, EdgeSpec, render
edge = render(EdgeSpec("127.0.0.1", 5070, (EdgeNode("node-a", "127.0.0.1", 5071),),
                   carriers=("127.0.0.1",)))
print(json.dumps({
    "edge_files": sorted(edge),
    "code": code,
    "files": {m.__name__: m.__file__ for m in (pbx, handoff, web, web.bench.handoff)},
    "imported_playwright": imported_playwright,
    "tests_importable": importlib.util.find_spec("tests") is not None,
}))
"""


def install(target: Path, work: Path) -> None:
    # Built from a copy, so the build's egg-info and build/ folders never land in the
    # checkout; offline, with this environment's setuptools.
    source = work / "source"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, timeout=300, capture_output=True,
    )


def test_an_installed_switchboard_renders_asterisks_configuration_without_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "installed"
    install(target, tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SWITCHBOARD_", "PYTHON"))} | SECRETS
    out = tmp_path / "installed-conf"
    run = subprocess.run(
        [sys.executable, "-S", "-P", "-c", CHECK, str(target),
         sysconfig.get_paths()["purelib"], str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["code"] == 0
    for module, file in result["files"].items():
        assert Path(file).is_relative_to(target), f"{module} came from {file}"
    assert not result["tests_importable"]
    assert not result["imported_playwright"]
    # The cluster edge's template is installed too.
    assert result["edge_files"] == ["dispatcher.list", "kamailio.cfg"]

    # The same files, to the byte, as the checkout renders with the same settings (the
    # defaults: no settings file, no SWITCHBOARD_ variables but the secrets).
    monkeypatch.chdir(tmp_path)
    for name in os.environ:
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    here = tmp_path / "checkout-conf"
    assert main(["config", "render", "--out", str(here)]) == 0
    capsys.readouterr()
    templates = sorted(p.name.removesuffix(".j2") for p in (REPO / "asterisk-config").glob("*.j2"))
    assert sorted(p.name for p in out.iterdir()) == templates
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        p.name: p.read_text() for p in here.iterdir()
    }
