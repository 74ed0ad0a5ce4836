"""An Asterisk someone else runs (docker compose, a distribution's package, another
host): Switchboard writes its configuration into a folder that Asterisk reads as its
own (a shared volume), asks it over ARI to read it again, checks at start-up that it
has what the product relies on, and takes recordings through ARI.

Nothing here starts or stops that Asterisk: when it restarts, the ARI and AMI links
reconnect by themselves and it comes back with the files last written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pbx.ari import (
    AriClient,
    AriConflict,
    AriError,
    AriUnauthorized,
    AsteriskInfo,
)
from pbx.asterisk_config import (
    InboundRoute,
    InstanceSpec,
    SipAgent,
    render,
    required_modules,
    write_files,
)
from pbx.installation import (
    MIN_MAJOR,
    AsteriskUnavailable,
    AsteriskUnreachable,
    parse_version,
    redact_url,
)
from pbx.spool import AriSpool
from pbx.trunk_config import SipTrunk, to_register_again

log = logging.getLogger(__name__)

# Asterisk reloads one module at a time; a reload asked for meanwhile is refused (409)
# and asked again this many times, a moment apart.
RELOAD_TRIES = 5


@dataclass
class ExternalAsterisk:
    """The PBX at ``ari_url``, whose configuration is ``spec`` written to ``config_dir``."""

    spec: InstanceSpec
    config_dir: Path
    ari_url: str  # without credentials
    ami_host: str
    # Sends a trunk's REGISTER now (AMI PJSIPRegister, the reporting class the AMI user
    # already has); set once the AMI link exists.
    register: Callable[[str], Awaitable[None]] | None = None
    _ari: AriClient | None = field(default=None, repr=False)

    # What an instance Switchboard starts has and this one has not: its process and
    # its log are on another host (trunk status goes without the log's last SIP answer).
    pid: int | None = None
    log_file: Path | None = None
    version: str = "unknown"

    @property
    def ari_auth(self) -> tuple[str, str]:
        return self.spec.ari_user, self.spec.ari_password

    @property
    def ari(self) -> AriClient:
        if self._ari is None:
            self._ari = AriClient(self.ari_url, *self.ari_auth)
        return self._ari

    def spool(self) -> AriSpool:
        return AriSpool(self.ari)

    def write(self) -> None:
        if not self.config_dir.is_dir():
            raise AsteriskUnavailable(
                f"asterisk.config_dir: {self.config_dir} is not a folder: it is where "
                "Switchboard writes the Asterisk's configuration (the folder it reads as "
                f"{self.spec.dirs.etc}, e.g. a shared volume)")
        write_files(self.spec, self.config_dir)

    async def check(self, wait_s: float = 60.0) -> None:
        """The Asterisk's version, once it answers ARI (it may still be starting, within
        ``wait_s``); refuses one older than MIN_MAJOR or without a module the rendered
        modules.conf requires, naming what is missing."""
        info = await self._wait_info(wait_s)
        version = str((info.get("system") or {}).get("version", ""))
        parsed = parse_version(f"Asterisk {version}")
        if parsed is None or parsed[0] < MIN_MAJOR:
            raise AsteriskUnavailable(
                f"the Asterisk at {redact_url(self.ari_url)} is {version or 'of unknown version'}"
                f"; Switchboard needs Asterisk >= {MIN_MAJOR}")
        running = {m.get("name") for m in await self.ari.asterisk.modules()
                   if m.get("status") == "Running"}
        needed = required_modules(render(self.spec)["modules.conf"])
        missing = [name for name in needed if name not in running]
        if missing:
            raise AsteriskUnavailable(
                f"the Asterisk at {redact_url(self.ari_url)} lacks modules Switchboard "
                f"relies on (not loaded or not running): {', '.join(missing)}. Start it "
                "with the modules.conf `switchboard config render` writes, or load them")
        self.version = f"Asterisk {version}"

    async def _wait_info(self, wait_s: float) -> AsteriskInfo:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                return await self.ari.asterisk.info()
            except AriUnauthorized:
                raise AsteriskUnavailable(
                    f"the Asterisk at {redact_url(self.ari_url)} refused ARI user "
                    f"{self.spec.ari_user!r}: its ari.conf holds another password than "
                    "SWITCHBOARD_ARI_PASSWORD (or asterisk.source's)") from None
            except AriError as exc:
                # A booting Asterisk (both containers start together) answers its HTTP
                # port before ARI is up: 404 until res_ari has its routes, 503 "Asterisk
                # not booted" until the core has. Like no answer at all, worth waiting
                # for; only a refused password (above) is known to be wrong.
                if loop.time() >= deadline:
                    raise AsteriskUnreachable(
                        f"no Asterisk answers ARI at {redact_url(self.ari_url)} "
                        f"({exc}) after {wait_s:.0f} s (asterisk.source)") from exc
            await asyncio.sleep(1.0)

    async def check_taken(self) -> None:
        """The files written are the ones Asterisk reads: after a reload it knows every
        agent's endpoint and every trunk's (else config_dir is not its folder)."""
        names = [a.name for a in self.spec.agents] + [t.name for t in self.spec.trunks]
        for name in names:
            try:
                await self.ari.endpoints.get("PJSIP", name)
            except AriError as exc:
                raise AsteriskUnavailable(
                    f"asterisk.config_dir: the Asterisk at {redact_url(self.ari_url)} did "
                    f"not take the files written to {self.config_dir} (after a reload it "
                    f"has no endpoint {name}: {exc}): that folder must be the one it reads "
                    f"as {self.spec.dirs.etc}") from None

    async def reload(self) -> None:
        """PJSIP (endpoints, trunks, the ACL of blocked addresses) and the dialplan read
        their files again. Calls keep their channels and bridges; registered phones
        stay registered (their contacts live in Asterisk's database)."""
        for module in ("res_pjsip.so", "pbx_config.so"):
            await self._reload(module)

    async def _reload(self, module: str) -> None:
        for attempt in range(RELOAD_TRIES):
            try:
                await self.ari.asterisk.reload_module(module)
                return
            except AriConflict:
                if attempt == RELOAD_TRIES - 1:
                    raise
                await asyncio.sleep(0.5)

    async def apply_directory(
        self, routes: tuple[InboundRoute, ...], agents: tuple[SipAgent, ...],
        trunks: tuple[SipTrunk, ...] | None = None,
    ) -> None:
        """As AsteriskInstance.apply_directory, through the shared folder and ARI."""
        before = self.spec.trunks
        self.spec = dataclasses.replace(
            self.spec, routes=routes, agents=agents,
            trunks=self.spec.trunks if trunks is None else trunks)
        self.write()
        await self.reload()
        if self.register is not None:
            for trunk in to_register_again(before, self.spec.trunks):
                await self.register(trunk.name)

    async def apply_blocks(self, blocked: tuple[str, ...]) -> None:
        self.spec = dataclasses.replace(self.spec, blocked=blocked)
        self.write()
        await self._reload("res_pjsip.so")

    async def stop(self) -> None:
        """Only our link: the Asterisk and its calls are someone else's to stop."""
        if self._ari is not None:
            await self._ari.close()
            self._ari = None


def split_ari_url(url: str) -> tuple[str, str, str, str]:
    """(the URL without credentials, its host, user, password) of asterisk.source."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    bare = parts._replace(netloc=netloc).geturl()
    return bare, parts.hostname or "127.0.0.1", parts.username or "", parts.password or ""
