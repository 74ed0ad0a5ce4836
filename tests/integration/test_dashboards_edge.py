"""`switchboard edge dashboards` as its systemd unit runs it: HAProxy (Debian's) on the
edge's HTTPS port in front of the nodes' dashboards, dropping root, stopped by SIGTERM,
and a HAProxy that dies by itself ends the command for systemd to start it again.
HAProxy in front of real nodes: tests/integration/test_cluster_nodes.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import ssl
from pathlib import Path

import aiohttp
import pytest

from handoff.settings import load
from pbx.ports import free_port
from tests.certificates import private_ca
from tests.integration.asterisk_helpers import process_ids
from tests.systemd_unit import as_systemd_starts_it, processes_reading, unit_settings
from tests.waiting import until
from web import systemd

pytestmark = pytest.mark.integration


async def test_switchboard_edge_dashboards_serves_https_as_its_unit_runs_it_until_sigterm(
    tmp_path: Path,
) -> None:
    https, node_port = free_port(), free_port()
    certificates = private_ca(tmp_path / "ca", "127.0.0.1")
    config = tmp_path / "switchboard.toml"
    config.write_text("\n".join((
        f'data_dir = "{tmp_path / "data"}"', "[cluster]", 'edge_address = "127.0.0.1"',
        f"edge_https_port = {https}", f'edge_config_dir = "{tmp_path / "etc"}"',
        f'edge_run_dir = "{tmp_path / "run"}"', 'carriers = ["127.0.0.1"]',
        f'edge_tls_cert = "{certificates.cert}"', f'edge_tls_key = "{certificates.key}"',
        # A node whose dashboard nobody runs: the edge checks it and serves no desk.
        "[[cluster.nodes]]", 'name = "node-a"', 'sip_host = "127.0.0.1"', "sip_port = 5062",
        f"dashboard_port = {node_port}", "")))
    unit = systemd.build_dashboards_unit(load(config), config, [], "root")
    assert unit is not None
    [unit_file] = systemd.write_units(unit, tmp_path / "units")
    argv, env, cwd = as_systemd_starts_it(unit_settings(unit_file))
    out = tmp_path / "dashboards.log"
    rendered = str(tmp_path / "etc" / "dashboards.cfg")
    trusted = ssl.create_default_context(cafile=str(certificates.ca))
    commands: list[asyncio.subprocess.Process] = []

    async def answers() -> int | None:
        """The edge's HTTPS answer's status (the edge's certificate trusted), or None."""
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"https://127.0.0.1:{https}/status", ssl=trusted,
                    timeout=aiohttp.ClientTimeout(total=3)) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def start() -> asyncio.subprocess.Process:
        with out.open("ab") as log:
            command = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=log)
        commands.append(command)
        await until(lambda: out.read_text().count("the dashboards' proxy runs: haproxy")
                    == len(commands), 30,
                    why=lambda: f"the command never said HAProxy runs:\n{out.read_text()}")
        return command

    try:
        command = await start()
        # HTTPS on the edge's certificate; no node's dashboard is up, so no desk is served.
        assert await until(answers, 10, why="the edge's HTTPS never answered") == 503
        [proxy] = processes_reading("haproxy", rendered)
        uid = pwd.getpwnam("haproxy").pw_uid  # it dropped root once it held its port
        assert process_ids(proxy)["Uid"] == [uid] * 4

        # HAProxy dies: the command says so and exits 1, for systemd to start it again.
        os.kill(proxy, signal.SIGKILL)
        assert await asyncio.wait_for(command.wait(), 30) == 1, out.read_text()
        assert "the dashboards' proxy (haproxy) exited by itself" in out.read_text()

        # Started again; then systemctl stop: SIGTERM to the command, which stops HAProxy
        # and exits 0 with nothing of it left, the port closed.
        command = await start()
        command.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(command.wait(), 30) == 0, out.read_text()
        await until(lambda: not processes_reading("haproxy", rendered), 5,
                    why="HAProxy outlived the command's stop")
        assert await answers() is None
    finally:
        for command in commands:
            if command.returncode is None:
                command.kill()
                await command.wait()
        for pid in processes_reading("haproxy", rendered):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
