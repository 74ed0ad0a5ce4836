"""Who Asterisk runs as: an unprivileged account that no other host service shares."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from pbx import rootfs
from pbx.installation import AsteriskUnavailable, Installation

# What Debian's asterisk package leaves in the tree: its account is 101, as the host's
# postgres often is.
PASSWD = """root:x:0:0:root:/root:/bin/bash
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
asterisk:x:101:101:Asterisk PBX daemon:/var/lib/asterisk:/usr/sbin/nologin
"""
GROUP = """root:x:0:
dialout:x:20:asterisk
asterisk:x:101:
"""


def tree(tmp_path: Path, passwd: str = PASSWD, group: str = GROUP) -> rootfs.Rootfs:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(passwd)
    (tmp_path / "etc/group").write_text(group)
    spool = tmp_path / "var/spool/asterisk"
    spool.mkdir(parents=True)
    os.chown(spool, 101, 101)
    return rootfs.Rootfs(tmp_path)


def host(users: dict[int, str], groups: dict[int, str] | None = None) -> rootfs.HostIds:
    return rootfs.HostIds(users, groups if groups is not None else dict(users))


def test_the_trees_account_keeps_its_ids_when_the_host_does_not_use_them(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path)
    account = root.daemon_account(host({0: "root", 100: "messagebus"}))
    assert account == rootfs.Account("asterisk", "asterisk", 101, 101)
    assert (tmp_path / "etc/passwd").read_text() == PASSWD


def test_an_id_the_host_gives_another_service_moves_to_a_free_one_and_its_files_follow(
    tmp_path: Path,
) -> None:
    # The chroot separates files, not processes: Asterisk as uid 101 would be the
    # host's postgres for the kernel.
    root = tree(tmp_path)
    taken = {0: "root", 101: "postgres", 999: "systemd-network"}
    account = root.daemon_account(host(taken))
    assert account.uid == account.gid == 998
    assert "asterisk:x:998:998:Asterisk PBX daemon" in (tmp_path / "etc/passwd").read_text()
    assert "asterisk:x:998:" in (tmp_path / "etc/group").read_text()
    assert "dialout:x:20:asterisk" in (tmp_path / "etc/group").read_text()
    spool = (tmp_path / "var/spool/asterisk").stat()
    assert (spool.st_uid, spool.st_gid) == (998, 998)
    # The next start finds it settled.
    assert root.daemon_account(host(taken)) == account


def test_the_hosts_own_asterisk_account_is_used_when_there_is_one(tmp_path: Path) -> None:
    root = tree(tmp_path)
    account = root.daemon_account(host({0: "root", 101: "postgres", 120: "asterisk"},
                                       {0: "root", 104: "postgres", 130: "asterisk"}))
    assert (account.uid, account.gid) == (120, 130)


def test_a_tree_without_the_account_says_to_rebuild_it(tmp_path: Path) -> None:
    root = tree(tmp_path, passwd="root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(rootfs.RootfsError, match="build it again"):
        root.daemon_account(host({0: "root"}))


def test_a_root_controller_does_not_start_a_host_asterisk_as_root_without_its_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    def no_such_user(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    found = Installation(kind="binary", version="Asterisk 22.5.0",
                         binary=Path("/usr/sbin/asterisk"))
    with pytest.raises(AsteriskUnavailable, match="adduser --system") as caught:
        found.daemon_account()
    assert "run Switchboard as an unprivileged user" in str(caught.value)


def test_an_unprivileged_controller_runs_asterisk_as_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    found = Installation(kind="binary", version="Asterisk 22.5.0",
                         binary=Path("/usr/sbin/asterisk"))
    assert found.daemon_account() is None
