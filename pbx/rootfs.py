"""The embedded Asterisk: a Debian sid root file system built once with mmdebstrap.

Asterisk 22 is not packaged for bookworm and Debian's sid package needs a newer libc,
so the product carries its own small sid tree (about 350 MB) in a cache folder outside
the clone and runs Asterisk in it with ``chroot``. A tree counts as built only when its
completion marker names the current recipe; anything else (an interrupted build, an
older recipe) is thrown away and built again, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import logging
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pbx.setup_progress import Progress

log = logging.getLogger(__name__)

# What goes into the tree. Changing this list changes the recipe digest, which makes
# every cached tree stale and rebuilt on next use.
PACKAGES = (
    "asterisk",
    "asterisk-modules",
    "asterisk-core-sounds-en",
    "asterisk-moh-opsound-wav",
)
SUITE = "sid"
MARKER = ".switchboard-rootfs"
# The account Debian's asterisk package creates; Asterisk drops to it after start-up.
DAEMON_ACCOUNT = "asterisk"
# Where a free id is looked for when the tree's account collides with a host account.
# Host packages take system ids from the bottom of Debian's range (100 upwards), so
# the top stays free longest.
SYSTEM_IDS = range(999, 99, -1)


class RootfsError(RuntimeError):
    """The embedded Asterisk cannot be built or used; the message says what to do."""


@dataclass(frozen=True)
class Account:
    """A user and its group, by name (as Asterisk's -U/-G take them) and by number (as
    the host's kernel and file system see them)."""

    user: str
    group: str
    uid: int
    gid: int


@dataclass(frozen=True)
class HostIds:
    """Who owns which ids on the host: ``{uid: user name}``, ``{gid: group name}``."""

    users: dict[int, str]
    groups: dict[int, str]

    @classmethod
    def read(cls) -> HostIds:
        return cls({p.pw_uid: p.pw_name for p in pwd.getpwall()},
                   {g.gr_gid: g.gr_name for g in grp.getgrall()})


@dataclass(frozen=True)
class Rootfs:
    path: Path

    @property
    def asterisk(self) -> Path:
        return self.path / "usr/sbin/asterisk"

    def host_path(self, inside: str) -> Path:
        """Where a path seen by the chrooted Asterisk lives on the host."""
        return self.path / inside.lstrip("/")

    def daemon_account(self, host: HostIds | None = None) -> Account:
        """The tree's ``asterisk`` account, with ids the host gives nobody else.

        The chroot separates files, not processes: a uid is one account for the kernel,
        so Asterisk with the package's id (101) would be the host's postgres (say), able
        to signal it and own its files. The tree's account therefore takes the host's own
        ``asterisk`` ids if there is such an account, else keeps its ids if the host
        does not use them, else moves to a free system id (the tree's files follow).
        """
        host = host or HostIds.read()
        passwd, group = self.path / "etc/passwd", self.path / "etc/group"
        users, groups = _id_table(passwd), _id_table(group)
        if DAEMON_ACCOUNT not in users or DAEMON_ACCOUNT not in groups:
            raise RootfsError(
                f"the embedded Asterisk's tree {self.path} has no {DAEMON_ACCOUNT!r} account "
                f"to run Asterisk as; remove that folder and run `switchboard setup` to "
                "build it again")
        uid, gid = users[DAEMON_ACCOUNT], groups[DAEMON_ACCOUNT]
        host_uid = next((u for u, n in host.users.items() if n == DAEMON_ACCOUNT), None)
        host_gid = next((g for g, n in host.groups.items() if n == DAEMON_ACCOUNT), None)
        others = {i for n, i in users.items() if n != DAEMON_ACCOUNT} | \
            {i for n, i in groups.items() if n != DAEMON_ACCOUNT}
        if host_uid is not None and host_gid is not None and \
                not {host_uid, host_gid} & others:
            want = (host_uid, host_gid)
        elif host.users.get(uid, DAEMON_ACCOUNT) == DAEMON_ACCOUNT and \
                host.groups.get(gid, DAEMON_ACCOUNT) == DAEMON_ACCOUNT:
            want = (uid, gid)
        else:
            taken = {*host.users, *host.groups, *users.values(), *groups.values()}
            free = next((i for i in SYSTEM_IDS if i not in taken), None)
            if free is None:
                raise RootfsError("no free system id (100-999) on this host for the "
                                  "embedded Asterisk's account")
            want = (free, free)
        if want != (uid, gid):
            log.info("the embedded Asterisk's account %s moves from %s:%s to %s:%s, ids "
                     "no other account on this host has", DAEMON_ACCOUNT, uid, gid, *want)
            _set_ids(passwd, DAEMON_ACCOUNT, {2: want[0], 3: want[1]})
            _set_ids(group, DAEMON_ACCOUNT, {2: want[1]})
            _chown_tree(self.path, (uid, gid), want)
        return Account(DAEMON_ACCOUNT, DAEMON_ACCOUNT, *want)


def _id_table(path: Path) -> dict[str, int]:
    """``{name: id}`` of an /etc/passwd or /etc/group file (the id is the third field)."""
    table = {}
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            table[fields[0]] = int(fields[2])
    return table


def _set_ids(path: Path, name: str, values: dict[int, int]) -> None:
    """Change ``name``'s numeric fields in an /etc/passwd or /etc/group file; the file is
    replaced whole, so an Asterisk starting meanwhile reads the old or the new one."""
    lines = []
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            for index, value in values.items():
                fields[index] = str(value)
        lines.append(":".join(fields))
    partial = path.with_name(path.name + ".switchboard")
    partial.write_text("\n".join(lines) + "\n")
    partial.chmod(path.stat().st_mode)
    partial.replace(path)


def _chown_tree(root: Path, old: tuple[int, int], new: tuple[int, int]) -> None:
    """What the package gave its account (its /etc/asterisk, /var/lib/asterisk ...) and
    earlier instance trees follow the account's new ids."""
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            uid = new[0] if st.st_uid == old[0] else -1
            gid = new[1] if st.st_gid == old[1] else -1
            if uid != -1 or gid != -1:
                os.lchown(path, uid, gid)


def recipe_digest(mirror: str) -> str:
    text = "\n".join([SUITE, mirror, *PACKAGES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    env = os.environ.get("SWITCHBOARD_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "switchboard"


def is_complete(path: Path, mirror: str) -> bool:
    marker = path / MARKER
    return marker.is_file() and marker.read_text().strip() == recipe_digest(mirror)


def find_built(cache_dir: Path, mirror: str) -> Rootfs | None:
    path = cache_dir / "asterisk-rootfs"
    return Rootfs(path) if is_complete(path, mirror) else None


@contextlib.contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    """Two `make test` runs at once must not build into the same folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "asterisk-rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def preflight() -> None:
    """Say why the embedded runtime cannot be built here, before trying."""
    if os.geteuid() != 0:
        raise RootfsError(
            "the embedded Asterisk needs root (it is built with mmdebstrap and run with "
            "chroot). Run as root, or install Asterisk >= 20 and put it on PATH, or set "
            "SWITCHBOARD_ASTERISK to a binary or to a running Asterisk's ARI URL, or use "
            "`docker compose up`."
        )
    if shutil.which("mmdebstrap") is None:
        raise RootfsError(
            "mmdebstrap is not installed; `apt-get install mmdebstrap` (the README's "
            "commands do this for you), or install Asterisk >= 20 yourself."
        )


def ensure(cache_dir: Path, mirror: str) -> Rootfs:
    """Return a complete tree, building it first if it is missing, stale or half-built."""
    found = find_built(cache_dir, mirror)
    if found:
        return found
    preflight()
    with _build_lock(cache_dir):
        found = find_built(cache_dir, mirror)  # another process may have built it meanwhile
        if found:
            return found
        return _build(cache_dir, mirror)


def _build(cache_dir: Path, mirror: str) -> Rootfs:
    final = cache_dir / "asterisk-rootfs"
    partial = cache_dir / "asterisk-rootfs.partial"
    for stale in (partial, final):
        if stale.exists():
            log.warning("removing incomplete or outdated Asterisk tree %s", stale)
            shutil.rmtree(stale)
    log.info("building the embedded Asterisk (Debian %s, about 350 MB from %s) into %s; "
             "once only, a minute or two", SUITE, mirror, final)
    started = time.monotonic()
    cmd = [
        "mmdebstrap",
        "--variant=apt",
        "--mode=root",
        # apt's own lines (each package fetched and set up), summarised by Progress.
        "--verbose",
        # The mirror may serve a snapshot whose Release file looks expired to this clock.
        '--aptopt=Acquire::Check-Valid-Until "false"',
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(partial),
        mirror,
    ]
    progress = Progress("mmdebstrap", log.info)
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when mmdebstrap closes its output
            progress.line(line.rstrip())
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RootfsError(_failure(proc.returncode, progress.tail, mirror, cache_dir))
    # Name resolution inside the tree (res_resolver, PJSIP hostnames) reads /etc/hosts.
    shutil.copyfile("/etc/hosts", partial / "etc/hosts")
    (partial / MARKER).write_text(recipe_digest(mirror) + "\n")
    partial.rename(final)
    log.info("built the embedded Asterisk in %.0f s", time.monotonic() - started)
    return Rootfs(final)


def _failure(code: int, tail: Iterable[str], mirror: str, cache_dir: Path) -> str:
    """What went wrong in the words of the step, and what to do about it."""
    lines = list(tail)
    text = "\n".join(lines)
    if any(w in text for w in ("Could not resolve", "Failed to fetch", "unable to connect",
                               "Temporary failure resolving", "Could not connect")):
        what = (f"mmdebstrap failed fetching from {mirror}: check the network (and a proxy, "
                "if one is needed), or set asterisk.mirror to a Debian mirror you can reach")
    elif "No space left on device" in text:
        what = (f"mmdebstrap ran out of disk space in {cache_dir}: free about 1 GB there, "
                "or set SWITCHBOARD_CACHE to a folder with room")
    else:
        what = (f"mmdebstrap exited with status {code}; run it again, and if it fails the "
                "same way install Asterisk >= 20 yourself (or set SWITCHBOARD_ASTERISK)")
    shown = "\n".join(f"  {line}" for line in lines[-8:])
    return f"building the embedded Asterisk failed: {what}.\nmmdebstrap's last lines:\n{shown}"
