"""Where Asterisk leaves a finished recording, and how the product takes it from there.

A call's bridge is recorded by Asterisk (``bridges/{id}/record``) into its spool's
recording folder. The product keeps recordings in its own data folder, so:

- an Asterisk Switchboard starts (:class:`HostSpool`) has its spool on this host
  (embedded: inside its root file system): the file is moved, one rename;
- an Asterisk someone else runs (:class:`AriSpool`), perhaps on another host or in a
  container whose volumes the product cannot read, hands it over through ARI's stored
  recordings (``GET /recordings/stored/{name}/file``, then ``DELETE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pbx.ari import AriClient, AriNotFound

log = logging.getLogger(__name__)


class Spool(Protocol):
    async def take(self, name: str, target: Path) -> bool:
        """Move recording ``name`` (``call-<id>.wav``) to ``target``; False if there is
        none."""
        ...

    async def discard(self, name: str) -> None: ...


@dataclass(frozen=True)
class SoundFolder:
    """A folder Asterisk plays sounds from (the product's own prompts): where it is on
    this host, and its name as Asterisk sees it (inside the embedded runtime's root)."""

    host: Path
    inside: str

    def media(self, stem: str) -> str:
        """The ARI media URI of ``<stem>.sln`` in this folder."""
        return f"sound:{self.inside}/{stem}"


HostPath = Callable[[str], Path]
"""A path relative to Asterisk's spool folder, mapped to this host."""


@dataclass(frozen=True)
class HostSpool:
    host_path: HostPath

    async def take(self, name: str, target: Path) -> bool:
        return await asyncio.to_thread(self._move, self.host_path(f"recording/{name}"), target)

    @staticmethod
    def _move(spool: Path, target: Path) -> bool:
        if not spool.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        spool.replace(target)
        if target.stat().st_uid != os.geteuid():
            # Written by the account Asterisk runs as: the product's archive is the
            # product's own, not that account's to change once the call is over.
            os.chown(target, os.geteuid(), os.getegid())
        return True

    async def discard(self, name: str) -> None:
        self.host_path(f"recording/{name}").unlink(missing_ok=True)


# How long a recording may take to close once its bridge is gone: Asterisk writes the
# WAV header's sizes when it closes the file, so a copy taken earlier would be cut short.
CLOSE_WAIT_S = 10.0


@dataclass(frozen=True)
class AriSpool:
    ari: AriClient

    async def take(self, name: str, target: Path) -> bool:
        stored = Path(name).stem  # ARI names a stored recording without its format
        await self._closed(stored)
        try:
            audio = await self.ari.recordings.stored_file(stored)
        except AriNotFound:
            log.warning("recording %s: Asterisk has no such stored recording", stored)
            return False
        await asyncio.to_thread(_write, target, audio)
        await self.discard(name)
        return True

    async def discard(self, name: str) -> None:
        with contextlib.suppress(AriNotFound):  # already gone: nothing to discard
            await self.ari.recordings.delete_stored(Path(name).stem)

    async def _closed(self, stored: str) -> None:
        """Until the live recording is over (ARI no longer lists it), within CLOSE_WAIT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_WAIT_S
        while loop.time() < deadline:
            try:
                await self.ari.recordings.get_live(stored)
            except AriNotFound:
                return
            await asyncio.sleep(0.05)
        log.warning("recording %s still open after %.0f s; taking it as it is",
                    stored, CLOSE_WAIT_S)


def _write(target: Path, audio: bytes) -> None:
    """Whole or not at all: the recordings page never sees a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    partial.write_bytes(audio)
    partial.replace(target)
