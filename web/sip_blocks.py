"""Blocking SIP scanners: an address that keeps failing authentication is refused by the
PBX for a while, before any authentication runs.

A PBX with its SIP port open is scanned within hours of going live, and a scanner that
is answered tries again at once: measured on this PBX, 500 wrong-password REGISTERs from
one address were answered at about 1,800 a second, each one a digest check. The AMI
security events already counted (pbx.security_events) say who fails: once an address
has failed ``block_after`` times within ``block_window_s``, it is blocked for
``block_for_s``. The block is a row in the store (it survives a restart, the Admin page
lists it and can lift it, the audit log has it) and a deny line in PJSIP's ACL, which
answers every later request from that address with a stateless 403 (PJSIP's ACL module
runs before anything else; see asterisk-config/pjsip.conf.j2).

Addresses in ``never_block`` (an office's NAT address, a monitoring host) and the
trunks' addresses are never blocked: one mistyped phone behind an office NAT must not
cut off the whole office, and a carrier is recognised by address, never by password.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from handoff.store import Store
from pbx.security_events import remote_host

log = logging.getLogger(__name__)

# Who the audit log names for a block the product set by itself.
BLOCKER_ACTOR = "sip-guard"
# Security events that are an authentication failing, as opposed to a refusal that
# follows a block (FailedACL) or an informational event (ChallengeSent).
AUTH_FAILURES = frozenset({"InvalidAccountID", "ChallengeResponseFailed", "InvalidPassword"})
# How often blocks that ran out are dropped from the PBX's ACL.
EXPIRY_CHECK_S = 15.0


@dataclass(frozen=True)
class BlockPolicy:
    # Failed authentications from one address, within the window, that block it; 0: never.
    block_after: int = 20
    block_window_s: float = 300.0
    block_for_s: float = 3600.0
    # Networks (CIDR or single addresses) that are never blocked.
    never_block: tuple[str, ...] = ()


class SipBlocker:
    """Feed it AMI security events (``ami.on_security(blocker.observe)``) and run
    :meth:`run` alongside, so that blocks that ran out are lifted from the PBX."""

    def __init__(
        self, store: Store, policy: BlockPolicy, registry: CollectorRegistry, *,
        applied: Callable[[], tuple[str, ...]],
        apply: Callable[[tuple[str, ...]], Awaitable[None]],
        exempt: Callable[[], Iterable[str]] = tuple,
        clock: Callable[[], float] = time.monotonic, max_tracked: int = 10_000,
    ) -> None:
        self._store, self._policy = store, policy
        self._applied, self._apply, self._exempt = applied, apply, exempt
        self._clock, self._max_tracked = clock, max_tracked
        self._never = [ipaddress.ip_network(net, strict=False) for net in policy.never_block]
        self._failures: dict[str, collections.deque[float]] = {}
        # One PBX reload at a time, and in order: a block and a lift must not cross.
        self._lock = asyncio.Lock()
        gauge = Gauge("switchboard_pbx_blocked_addresses",
                      "addresses the PBX refuses for failing authentication too often",
                      registry=registry)
        gauge.set_function(lambda: float(len(self._applied())))

    async def observe(self, event: Mapping[str, str]) -> None:
        if self._policy.block_after <= 0 or event.get("Event") not in AUTH_FAILURES:
            return
        address = remote_host(str(event.get("RemoteAddress", "")))
        if address in self._applied() or not self._blockable(address):
            return
        now = self._clock()
        seen = self._failures.get(address)
        if seen is None:
            if len(self._failures) >= self._max_tracked:
                # A scan from many addresses: forget the one quiet the longest.
                quiet = min(self._failures, key=lambda a: self._failures[a][-1])
                del self._failures[quiet]
            seen = self._failures[address] = collections.deque()
        seen.append(now)
        while seen and seen[0] < now - self._policy.block_window_s:
            seen.popleft()
        if len(seen) >= self._policy.block_after:
            del self._failures[address]
            await self.block(address, len(seen))

    def _blockable(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # not an address we could put in an ACL ("?")
        exempt = {*self._exempt()}
        return address not in exempt and not any(ip in net for net in self._never)

    async def block(self, address: str, failures: int) -> None:
        async with self._store.transaction() as tx:
            block = await tx.blocks.block(address, self._policy.block_for_s, failures)
            await tx.audit.record(BLOCKER_ACTOR, "sip_address_blocked", address, {
                "failures": failures, "within_s": self._policy.block_window_s,
                "until": block.until.isoformat()})
        log.warning("blocked SIP requests from %s for %.0f s after %d failed "
                    "authentications", address, self._policy.block_for_s, failures)
        await self.refresh()

    async def refresh(self) -> bool:
        """Give the PBX the blocks in force now, if they changed; True if it reloaded."""
        async with self._lock:
            async with self._store.transaction() as tx:
                wanted = tuple(sorted({b.address for b in await tx.blocks.active()}))
            if wanted == self._applied():
                return False
            await self._apply(wanted)
            return True

    async def run(self) -> None:
        """Blocks that ran out (or were lifted elsewhere) leave the PBX's ACL."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("the PBX's blocked addresses could not be brought up to date")
            await asyncio.sleep(EXPIRY_CHECK_S)
