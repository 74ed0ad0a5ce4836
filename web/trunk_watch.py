"""Each trunk's status, asked of the PBX every few seconds, for the admin page and
``/metrics`` (pbx.trunk_status says where Asterisk tells it).

A change is logged once, when it happens ("trunk acme: registered -> rejected"), not at
every look: an operator reading the log sees when a carrier went away and came back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pbx.ami import AmiError
from pbx.ari import AriError
from pbx.trunk_config import SipTrunk
from pbx.trunk_status import (
    EndpointState,
    Registrations,
    TrunkState,
    TrunkStatus,
    read_statuses,
)

log = logging.getLogger(__name__)

TRUNK_CHECK_S = 5.0


class TrunkWatch:
    def __init__(self, trunks: Callable[[], Sequence[SipTrunk]], ami: Registrations,
                 endpoint_state: EndpointState, log_file: Path | None) -> None:
        self.trunks = trunks
        self.ami = ami
        self.endpoint_state = endpoint_state
        self.log_file = log_file
        self.statuses: dict[str, TrunkStatus] = {}

    async def refresh(self) -> Mapping[str, TrunkStatus]:
        now = await read_statuses(self.trunks(), self.ami, self.endpoint_state, self.log_file)
        for name, status in now.items():
            before = self.statuses.get(name)
            if before is None or before.state is not status.state:
                level = logging.INFO if status.up else logging.WARNING
                log.log(level, "trunk %s: %s -> %s%s", name,
                        before.state if before else "starting", status.state,
                        f" ({status.last_error})" if status.last_error else "")
        self.statuses = now
        return now

    async def run(self, every_s: float = TRUNK_CHECK_S) -> None:
        while True:
            try:
                await self.refresh()
            except (AmiError, AriError, OSError) as exc:
                # The AMI or ARI link is down: those report it once; statuses stay as
                # last seen rather than flapping to "unknown".
                log.debug("trunk status not refreshed: %s", exc)
            await asyncio.sleep(every_s)


class TrunkMetrics(Collector):
    """``switchboard_trunk_up`` and ``switchboard_trunk_state`` from the last statuses."""

    def __init__(self, statuses: Callable[[], Mapping[str, TrunkStatus]]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("switchboard_trunk_up", "1 while a trunk is registered (or, "
                               "recognised by address, answers OPTIONS)", labels=["trunk"])
        state = GaugeMetricFamily("switchboard_trunk_state", "1 for the trunk's state: "
                                  + ", ".join(s.value for s in TrunkState),
                                  labels=["trunk", "state"])
        for name, status in sorted(self.statuses().items()):
            up.add_metric([name], 1.0 if status.up else 0.0)
            for kind in TrunkState:
                state.add_metric([name, kind.value], 1.0 if status.state is kind else 0.0)
        yield up
        yield state
