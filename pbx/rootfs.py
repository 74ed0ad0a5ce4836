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
import hashlib
import logging
import os
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


class RootfsError(RuntimeError):
    """The embedded Asterisk cannot be built or used; the message says what to do."""


@dataclass(frozen=True)
class Rootfs:
    path: Path

    @property
    def asterisk(self) -> Path:
        return self.path / "usr/sbin/asterisk"

    def host_path(self, inside: str) -> Path:
        """Where a path seen by the chrooted Asterisk lives on the host."""
        return self.path / inside.lstrip("/")


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
