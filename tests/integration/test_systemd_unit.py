"""The systemd unit's command as systemd runs it: a kill -9 of the controller leaves
Asterisk and its calls up (KillMode=process), the restart (Restart=always) re-attaches,
and a stop (SIGTERM to the controller only) stops Asterisk too.

systemd itself does not run here: the restart is the test's second start of the unit's
ExecStart, under the unit's environment, folder and capability bounds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.asterisk_helpers import process_ids
from tests.product_run import REPO, Product, product
from tests.systemd_unit import as_systemd_starts_it, unit_settings
from tests.waiting import until

__all__ = ["product"]

pytestmark = pytest.mark.integration


def capability_bounds(pid: int) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    mask = next(line.split()[1] for line in status if line.startswith("CapBnd:"))
    decoded = subprocess.run(["capsh", f"--decode={mask}"], capture_output=True, text=True,
                             check=True).stdout.strip()
    return {cap.upper() for cap in decoded.partition("=")[2].split(",") if cap}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_the_units_command_survives_kill_9_reattaches_and_stops_asterisk_on_stop(
    product: Product, tmp_path: Path,
) -> None:
    render = await asyncio.create_subprocess_exec(
        *product.argv("systemd", "render", "--out", str(tmp_path / "units")), cwd=REPO)
    assert await render.wait() == 0
    service = unit_settings(tmp_path / "units/switchboard.service")
    assert service["KillMode"] == ["process"] and service["Restart"] == ["always"]
    product.run_command, product.run_env, product.run_cwd = as_systemd_starts_it(service)

    await product.start()
    assert product.proc is not None
    # The unit's bounds (those this container has at all: no CAP_SYS_RESOURCE in Docker).
    allowed = set(service["CapabilityBoundingSet"][0].split()) & capability_bounds(os.getpid())
    assert capability_bounds(product.proc.pid) == allowed
    pid = int(str(product.state()["asterisk_pid"]))
    assert 0 not in process_ids(pid)["Uid"]  # Asterisk dropped root, the unit's is bounded

    # The controller crashes; systemd kills nothing else and starts it again.
    await product.signal(signal.SIGKILL)
    assert alive(pid)
    await product.start()
    assert product.state()["asterisk_pid"] == pid

    # systemctl stop: SIGTERM to the controller, which stops its Asterisk.
    assert await product.signal(signal.SIGTERM) == 0
    await until(lambda: not alive(pid), why=f"Asterisk {pid} outlived the unit's stop")
