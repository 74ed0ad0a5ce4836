"""The keeper's decisions (web.asterisk_keeper): whom it starts again, and how it retries.
That a killed Asterisk really comes back under `switchboard run` is
tests/integration/test_asterisk_keeper.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from pbx.runtime import AsteriskInstance, AsteriskUnavailable
from tests.waiting import until
from web import asterisk_keeper
from web.asterisk_keeper import AsteriskKeeper, KeeperMetrics


@dataclass
class FakeAsterisk:
    name: str
    running: bool = True
    wanted: bool = True
    failures: int = 0  # starts that fail before one succeeds
    starts: list[float] = field(default_factory=list)
    pid: int = 100

    @property
    def spec(self) -> Any:
        return SimpleNamespace(name=self.name)

    async def start(self) -> None:
        self.starts.append(asyncio.get_running_loop().time())
        if self.failures:
            self.failures -= 1
            self.wanted = False  # as AsteriskInstance.start's clean-up stop() does
            raise AsteriskUnavailable("Asterisk pbx failed to start: port in use")
        self.running, self.wanted, self.pid = True, True, self.pid + 1


async def keeping(*instances: FakeAsterisk) -> tuple[AsteriskKeeper, asyncio.Task[None]]:
    restarted: list[str] = []
    keeper = AsteriskKeeper(lambda: cast(list[AsteriskInstance], list(instances)),
                            restarted=lambda i: restarted.append(i.spec.name), check_s=0.01)
    return keeper, asyncio.create_task(keeper.run())


async def test_only_a_process_that_died_while_wanted_is_started_again(monkeypatch: Any) -> None:
    died = FakeAsterisk("pbx", running=False)
    stopped = FakeAsterisk("carrier", running=False, wanted=False)  # stop(): not a death
    keeper, task = await keeping(died, stopped)
    try:
        await until(lambda: died.running)
        await asyncio.sleep(0.05)
        assert len(died.starts) == 1 and stopped.starts == []
        assert keeper.restarts == {"pbx": 1}
        samples = [sample for family in KeeperMetrics(keeper).collect()
                   for sample in family.samples]
        assert [(s.name, s.labels, s.value) for s in samples] == [
            ("switchboard_asterisk_restarts_total", {"instance": "pbx"}, 1.0)]
    finally:
        task.cancel()


async def test_a_failing_start_is_retried_with_a_growing_pause(monkeypatch: Any) -> None:
    monkeypatch.setattr(asterisk_keeper, "FIRST_PAUSE_S", 0.02)
    # A failed start() runs stop(), which clears `wanted`: the keeper goes on anyway.
    broken = FakeAsterisk("pbx", running=False, failures=3)
    keeper, task = await keeping(broken)
    try:
        await until(lambda: broken.running, within=5)
        assert len(broken.starts) == 4
        pauses = [b - a for a, b in zip(broken.starts, broken.starts[1:], strict=False)]
        assert pauses[2] > pauses[0]  # 0.02, 0.04, 0.08 (plus the looks between)
        assert keeper.restarts == {"pbx": 1}
    finally:
        task.cancel()
