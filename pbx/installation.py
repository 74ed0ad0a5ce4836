"""Find an Asterisk to use.

Where Asterisk comes from, in this order:
1. ``SWITCHBOARD_ASTERISK`` (or ``asterisk.source``): a path to an ``asterisk`` binary,
   or the ARI URL of an Asterisk someone else runs (``http://user:pass@host:8088/ari``);
2. ``asterisk`` >= 20 on PATH;
3. the embedded runtime: Debian sid's Asterisk in a root file system built once into a
   cache folder (see :mod:`pbx.rootfs`) and run with ``chroot``.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pbx import rootfs

log = logging.getLogger(__name__)

MIN_MAJOR = 20
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class AsteriskUnavailable(RuntimeError):
    """Asterisk cannot be found, built or started; the message says what to do instead."""


class AsteriskUnreachable(AsteriskUnavailable):
    """Nobody answers where Asterisk should be (yet): not a wrong setting, so worth
    another try (web.startup retries it)."""


@dataclass(frozen=True)
class Installation:
    """An Asterisk we can use. ``kind`` says how it runs."""

    kind: Literal["embedded", "binary", "external"]
    version: str
    binary: Path | None = None
    root: rootfs.Rootfs | None = None
    ari_url: str | None = None

    @property
    def where(self) -> str:
        if self.kind == "embedded" and self.root:
            return f"embedded Debian sid root file system at {self.root.path}"
        if self.kind == "binary":
            return f"{self.binary}"
        return f"external instance at {redact_url(self.ari_url or '')}"

    def command(self, *args: str) -> list[str]:
        """Argv running the asterisk binary (inside the chroot for the embedded one)."""
        if self.kind == "embedded" and self.root:
            return ["chroot", str(self.root.path), "/usr/sbin/asterisk", *args]
        if self.kind == "binary" and self.binary:
            return [str(self.binary), *args]
        raise AsteriskUnavailable("an external Asterisk is not started by Switchboard")

    def daemon_account(self) -> rootfs.Account | None:
        """The unprivileged account Asterisk drops to once it has read asterisk.conf
        (its ``-U``/``-G``), so a flaw reached over SIP or RTP gets no root; None when
        Switchboard itself is not root: Asterisk then runs as Switchboard's own user.

        Embedded: the root file system's ``asterisk`` account (ids the host gives nobody
        else); a binary: the host's ``asterisk`` account, which Debian's package creates;
        without one, Asterisk is not started as root: the error says what to do.
        """
        if os.geteuid() != 0:
            return None
        if self.kind == "embedded" and self.root:
            try:
                return self.root.daemon_account()
            except rootfs.RootfsError as exc:
                raise AsteriskUnavailable(str(exc)) from exc
        try:
            user = pwd.getpwnam(rootfs.DAEMON_ACCOUNT)
        except KeyError:
            raise AsteriskUnavailable(
                f"{self.binary} would run as root: this host has no {rootfs.DAEMON_ACCOUNT!r} "
                "account for it to drop to. Create one (`adduser --system --group --home "
                "/var/lib/asterisk asterisk`; Debian's asterisk package does), or run "
                "Switchboard as an unprivileged user (Asterisk then runs as that user)"
            ) from None
        group = grp.getgrgid(user.pw_gid).gr_name
        return rootfs.Account(user.pw_name, group, user.pw_uid, user.pw_gid)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"Asterisk (?:certified/)?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _binary_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(
            [*argv, "-V"], capture_output=True, text=True, timeout=15, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AsteriskUnavailable(f"cannot run {argv[-1]}: {exc}") from exc
    return out


def locate(
    source: str = "auto",
    cache_dir: Path | None = None,
    mirror: str = DEFAULT_MIRROR,
    build: bool = True,
) -> Installation:
    """Find an Asterisk to use, building the embedded one if allowed and needed."""
    source = os.environ.get("SWITCHBOARD_ASTERISK", "") or source
    if source.startswith(("http://", "https://")):
        return Installation(kind="external", version="unknown", ari_url=source)
    if source not in ("", "auto"):
        path = Path(source)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AsteriskUnavailable(
                f"asterisk.source / SWITCHBOARD_ASTERISK: {source!r} is neither an executable "
                "asterisk binary nor an http(s) ARI URL"
            )
        return _checked_binary(path)
    on_path = shutil.which("asterisk")
    if on_path:
        try:
            return _checked_binary(Path(on_path))
        except AsteriskUnavailable as exc:
            log.info("not using %s: %s", on_path, exc)
    cache = cache_dir or rootfs.default_cache_dir()
    try:
        tree = rootfs.ensure(cache, mirror) if build else rootfs.find_built(cache, mirror)
    except rootfs.RootfsError as exc:
        raise AsteriskUnavailable(str(exc)) from exc
    if tree is None:
        raise AsteriskUnavailable(
            f"no Asterisk found: none on PATH and the embedded one is not built yet in {cache} "
            "(`make run` or `switchboard setup` builds it)"
        )
    version = _binary_version(["chroot", str(tree.path), "/usr/sbin/asterisk"])
    return Installation(kind="embedded", version=version, root=tree, binary=tree.asterisk)


def _checked_binary(path: Path) -> Installation:
    version = _binary_version([str(path)])
    parsed = parse_version(version)
    if not parsed or parsed[0] < MIN_MAJOR:
        raise AsteriskUnavailable(f"{path} reports {version!r}; Switchboard needs Asterisk >= 20")
    return Installation(kind="binary", version=version, binary=path)

