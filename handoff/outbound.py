"""Calls out: which trunk carries a number, or why none may (handoff.trunks has the rules).

Asked once per call out, before anything is dialled, so a trunk the admin page just
added, disabled or restricted applies to the next call at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from handoff.logs import mask_number
from handoff.store import Store
from handoff.trunks import OutboundRefused, Trunk, choose

log = logging.getLogger(__name__)


class Outbound:
    def __init__(self, store: Store, *, country: str = "us",
                 settings_trunks: Sequence[Trunk] = ()) -> None:
        self.store = store
        self.country = country
        # The settings file's trunks come first, in the file's order.
        self.settings_trunks = tuple(settings_trunks)

    async def trunks(self) -> list[Trunk]:
        """Every trunk, in the order calls out try them."""
        async with self.store.transaction() as tx:
            return [trunk for trunk, _ in await tx.trunks.in_order(self.settings_trunks)]

    async def route(self, number: str, *, purpose: str, actor: str,
                    call_id: str | None = None) -> Trunk:
        """The trunk to dial ``number`` through. A refusal is written to the audit log
        (who wanted to call what, and why not) and raised as OutboundRefused."""
        try:
            trunk = choose(await self.trunks(), number, self.country)
        except OutboundRefused as refused:
            # A call-back's number is a caller's: masked in the log, whole in the audit
            # line (the admin who reads that may see it).
            log.warning("call=%s: %s to %s refused: %s", call_id, purpose,
                        mask_number(number), refused.reason)
            async with self.store.transaction() as tx:
                await tx.audit.record(actor, "outbound_refused", f"number:{number}",
                                      {"purpose": purpose, "reason": refused.reason,
                                       **({"call": call_id} if call_id else {})})
            raise
        log.info("call=%s: %s to %s goes out through trunk %s", call_id, purpose,
                 mask_number(number), trunk.name)
        return trunk
