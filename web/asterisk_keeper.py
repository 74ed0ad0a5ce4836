"""Keeps the Asterisk instances `switchboard run` started running: one that dies on its
own (a crash, kill -9, the kernel's OOM killer) is started again with the same
configuration, ports and secrets, as systemd's ``Restart=always`` does for a packaged
Asterisk. The calls it carried are gone with it; the controller's ARI link reconnects by
itself and its reconciliation ends their rows with an outcome (``pbx_restart``). What
the keeper adds is that new calls are answered again without an operator.

Only a process that went away while still wanted is started again: ``stop()`` (the
product shutting down, a test's stop-and-start) is not a death. An Asterisk someone else
runs (asterisk.source) is theirs to keep up; the keeper never sees it.

A start that fails (its log names why) is retried with a doubling pause, up to
:data:`MAX_PAUSE_S`, and logged each time, so a broken configuration does not spin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pbx.runtime import AsteriskInstance, AsteriskUnavailable

log = logging.getLogger(__name__)

CHECK_S = 1.0
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0


@dataclass
class AsteriskKeeper:
    # The instances to keep (the PBX, and the demo carrier when it runs), read at each
    # look: a stopped or replaced one is simply not there any more.
    instances: Callable[[], Sequence[AsteriskInstance]]
    # Called after a restart, e.g. to tell `switchboard doctor` the new process ID.
    restarted: Callable[[AsteriskInstance], object] = lambda _: None
    check_s: float = CHECK_S
    # Restarts made, per instance name: counted on /metrics.
    restarts: dict[str, int] = field(default_factory=dict)
    # Instances found dead that are not running again yet: retried until they are.
    _reviving: set[str] = field(default_factory=set)

    async def run(self) -> None:
        pause = FIRST_PAUSE_S
        while True:
            await asyncio.sleep(self.check_s)
            for instance in self.instances():
                name = instance.spec.name
                if instance.running or not (instance.wanted or name in self._reviving):
                    continue
                if name not in self._reviving:
                    log.error("Asterisk %s died (pid %s); starting it again", name,
                              instance.pid)
                    self._reviving.add(name)
                if await self._revive(instance):
                    self._reviving.discard(name)
                    pause = FIRST_PAUSE_S
                else:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, MAX_PAUSE_S)

    async def _revive(self, instance: AsteriskInstance) -> bool:
        name = instance.spec.name
        try:
            await instance.start()
        except AsteriskUnavailable as exc:
            log.error("Asterisk %s did not start again: %s", name, exc)
            return False
        self.restarts[name] = self.restarts.get(name, 0) + 1
        log.warning("Asterisk %s runs again (pid %s, restart %d)", name, instance.pid,
                    self.restarts[name])
        self.restarted(instance)
        return True


class KeeperMetrics(Collector):
    """``switchboard_asterisk_restarts_total``: each one is calls lost, worth an alert."""

    def __init__(self, keeper: AsteriskKeeper) -> None:
        self._keeper = keeper

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "switchboard_asterisk_restarts", "Asterisk instances started again after dying",
            labels=["instance"])
        for name, count in sorted(self._keeper.restarts.items()):
            family.add_metric([name], float(count))
        yield family
