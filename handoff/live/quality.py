"""Each leg's figures as it ends: Asterisk's RTP statistics, caught as it writes them.

Asterisk sets the RTPAUDIOQOS variables on a PJSIP leg as it ends, whether we hang it
up or its phone does (handoff.quality); the ChannelVarset events reach us before the
leg's StasisEnd, in the call's order. Nothing is asked of Asterisk at hang-up time, so
ending a call is not slowed down by a statistics request per leg.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from handoff.events import QUALITY_TOPIC, LegQualityRecorded
from handoff.live.flow import Flow
from handoff.quality import QOS_RTT, QOS_VARIABLES, BadQuality, LegQuality

if TYPE_CHECKING:
    from handoff.live.control import CallControl

log = logging.getLogger(__name__)


class LegQualities(Flow):
    def __init__(self, ctl: CallControl) -> None:
        super().__init__(ctl)
        # The variables of legs whose last one (RTPAUDIOQOSRTT) has not come yet; an
        # entry lives between two events of one leg, or until its StasisEnd.
        self._pending: dict[str, dict[str, str]] = {}

    async def on_varset(self, event: Mapping[str, Any]) -> None:
        variable = event.get("variable")
        channel = event.get("channel")
        if variable not in QOS_VARIABLES or not isinstance(channel, Mapping):
            return
        leg = str(channel["id"])
        found = self._pending.setdefault(leg, {})
        found[str(variable)] = str(event.get("value", ""))
        if variable != QOS_RTT:
            return
        del self._pending[leg]
        try:
            figures = LegQuality.from_variables(found)
        except BadQuality as exc:
            log.warning("leg %s: Asterisk's RTP statistics could not be read: %s", leg, exc)
            return
        async with self.store.transaction() as tx:
            row = await tx.quality.record(leg, figures)
        if row is None:
            return
        log.info("call=%s %s leg %s: jitter %s ms, loss %s %%, rtt %s ms", row.call_id,
                 row.leg, leg, figures.jitter_ms, figures.loss_pct, figures.rtt_ms)
        self.hub.publish(QUALITY_TOPIC, LegQualityRecorded(
            row.call_id, row.leg, figures.jitter_ms, figures.loss_pct, figures.rtt_ms))

    async def forget(self, event: Mapping[str, Any]) -> None:
        """The leg left Stasis: whatever it set later no longer reaches us."""
        channel = event.get("channel")
        if isinstance(channel, Mapping):
            self._pending.pop(str(channel.get("id")), None)
