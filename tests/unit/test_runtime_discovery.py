"""Finding Asterisk: explicit setting, PATH, then the embedded root file system."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import time
from pathlib import Path

import pytest

from pbx import installation, rootfs, runtime

MIRROR = "http://deb.debian.org/debian"


def fake_asterisk(tmp_path: Path, version: str) -> Path:
    path = tmp_path / "bin" / "asterisk"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("SWITCHBOARD_ASTERISK", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def test_explicit_binary_wins(clean_env: Path) -> None:
    binary = fake_asterisk(clean_env, "Asterisk 22.5.0")
    found = runtime.locate(str(binary))
    assert found.kind == "binary" and found.binary == binary


def test_environment_ari_url_means_an_external_instance(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_ASTERISK", "http://u:secret@127.0.0.1:8088/ari")
    found = runtime.locate()
    assert found.kind == "external"
    assert "secret" not in found.where


def test_explicit_path_that_is_not_asterisk_is_refused(clean_env: Path) -> None:
    with pytest.raises(runtime.AsteriskUnavailable, match="neither an executable"):
        runtime.locate(str(clean_env / "missing"))


def test_asterisk_on_path_is_used_when_new_enough(clean_env: Path) -> None:
    fake_asterisk(clean_env, "Asterisk 20.9.3")
    assert runtime.locate(cache_dir=clean_env / "cache", build=False).kind == "binary"


def test_old_asterisk_on_path_falls_through_to_embedded(clean_env: Path) -> None:
    fake_asterisk(clean_env, "Asterisk 18.20.0")
    with pytest.raises(runtime.AsteriskUnavailable, match="not built yet"):
        runtime.locate(cache_dir=clean_env / "cache", build=False)


def test_explicit_old_binary_is_refused_with_version(clean_env: Path) -> None:
    binary = fake_asterisk(clean_env, "Asterisk 16.30.0")
    with pytest.raises(runtime.AsteriskUnavailable, match="needs Asterisk >= 20"):
        runtime.locate(str(binary))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Asterisk 22.10.1+dfsg+~cs6.17.60671434-1", (22, 10, 1)),
        ("Asterisk certified/20.7-cert5", (20, 7, 0)),
        ("nonsense", None),
    ],
)
def test_version_parsing(text: str, expected: tuple[int, int, int] | None) -> None:
    assert installation.parse_version(text) == expected


def test_half_built_tree_is_not_used(tmp_path: Path) -> None:
    tree = tmp_path / "asterisk-rootfs"
    (tree / "usr/sbin").mkdir(parents=True)
    assert rootfs.find_built(tmp_path, MIRROR) is None
    (tree / rootfs.MARKER).write_text("older-recipe\n")
    assert rootfs.find_built(tmp_path, MIRROR) is None
    (tree / rootfs.MARKER).write_text(rootfs.recipe_digest(MIRROR) + "\n")
    assert rootfs.find_built(tmp_path, MIRROR) == rootfs.Rootfs(tree)


def test_not_root_is_explained_with_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(rootfs.RootfsError, match="needs root") as caught:
        rootfs.preflight()
    assert "docker compose" in str(caught.value)


def test_missing_mmdebstrap_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(rootfs.RootfsError, match="apt-get install mmdebstrap"):
        rootfs.preflight()


def test_taken_port_is_reported_by_key() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(runtime.PortInUse, match=f"asterisk.sip_port: UDP port {port}"):
            runtime.allocate_ports(runtime.PortRequest(sip=port))


def test_allocated_ports_avoid_each_other() -> None:
    first = runtime.allocate_ports(runtime.PortRequest())
    taken = frozenset({first.http, first.sip, first.ami})
    second = runtime.allocate_ports(runtime.PortRequest(), avoid=taken)
    assert not {second.http, second.sip, second.ami} & taken
    assert len({first.http, first.sip, first.ami}) == 3


def _time_wait_on(port: int) -> bool:
    """Whether a socket on 127.0.0.1:``port`` is in TIME_WAIT (state 06 in /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[1] == local and row.split()[3] == "06" for row in rows)


def test_a_port_left_in_time_wait_is_free_but_a_listening_one_is_not() -> None:
    # What Ctrl-C leaves: Asterisk closed its side of each browser's SIP WebSocket first,
    # so those connections sit in TIME_WAIT on the HTTP port for a minute. Nothing
    # listens there, and the next `switchboard run` must be able to start.
    with socket.socket() as server:
        # As Asterisk's HTTP server does (main/tcptls.c); its accepted connections, and
        # so their TIME_WAIT remains, inherit the flag.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.close()
    for _ in range(200):  # the peer's FIN crosses loopback: bounded wait, 2 s at most
        if _time_wait_on(port):
            break
        time.sleep(0.01)
    assert _time_wait_on(port), "no TIME_WAIT socket was left on the port"
    assert runtime.allocate_ports(runtime.PortRequest(http=port)).http == port

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        with pytest.raises(runtime.PortInUse, match=f"asterisk.http_port: TCP port {taken}"):
            runtime.allocate_ports(runtime.PortRequest(http=taken))
