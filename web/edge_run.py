"""`switchboard edge run` and `switchboard edge dashboards`: the cluster's edge as
services of its own machine, the way `switchboard run` serves a node with its embedded
Asterisk.

The edge is not started by `switchboard run`: it is the one machine carriers, desk
phones and agents' browsers reach, in front of every node, so it lives and dies apart
from any node. `edge run` renders Kamailio's files from the settings and the database
(the phones' accounts); `edge dashboards` renders HAProxy's (every node's dashboard
behind the edge's HTTPS port). Each has its program check them, runs it in the
foreground (Kamailio as its own account, HAProxy dropping root once it holds its port
and certificate) with its log on our stderr (the service's journal), and stops it on
SIGTERM or Ctrl-C. A program that dies by itself ends its command with status 1, so a
service manager starts it again.

Two commands and two units, not one: Kamailio keeps the phones' registrations in its
memory, so restarting it for a dashboard proxy that crashed (or took a new
certificate) would lose every phone until its next REGISTER; and restarting HAProxy
closes every desk's WebSocket, which the phones' proxy has no reason to cause.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Protocol

from pbx.dashboards_edge import DashboardsEdge, DashboardsSpec, HaproxyUnavailable
from pbx.edge import Edge
from pbx.kamailio_config import EdgeSpec, KamailioUnavailable

log = logging.getLogger(__name__)

# The exit status of an edge whose Kamailio (or HAProxy) refuses its rendered files: as
# a wrong setting, starting again would only repeat it (the unit's
# RestartPreventExitStatus).
REFUSED = 2
# No Kamailio (HAProxy) to run (not installed, no account for it), or it would not
# start: as `switchboard run` without an Asterisk.
UNAVAILABLE = 3


class Program(Protocol):
    """A program of the edge's, run in the foreground (pbx.edge.Edge,
    pbx.dashboards_edge.DashboardsEdge)."""

    process: asyncio.subprocess.Process | None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def main(spec: EdgeSpec) -> int:
    """`switchboard edge run`: its exit status, and why on stderr when it is not 0."""
    return _main(lambda: serve(spec))


def dashboards_main(spec: DashboardsSpec) -> int:
    """`switchboard edge dashboards`: its exit status, and why on stderr when not 0."""
    return _main(lambda: serve_dashboards(spec))


def _main(serving: Callable[[], Coroutine[None, None, int]]) -> int:
    try:
        return asyncio.run(serving())
    except (KamailioUnavailable, HaproxyUnavailable) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except ValueError as exc:  # kamailio -c or haproxy -c refuses the rendered files
        print(f"switchboard: {exc}", file=sys.stderr)
        return REFUSED
    except OSError as exc:  # its folders: not writable here (not root?), not folders
        print(f"switchboard: the edge's files or run folder: {exc}", file=sys.stderr)
        return 1


async def serve(spec: EdgeSpec) -> int:
    """Run the edge until SIGTERM or SIGINT (0) or until Kamailio exits by itself (1).
    Raises KamailioUnavailable (not installed, no account, did not start) and
    ValueError (``kamailio -c`` refuses the files)."""
    edge = Edge(spec, Path(spec.config_dir), to_stderr=True)

    def banner(pid: int) -> str:
        return (f"the SIP edge runs: kamailio pid={pid}, SIP {'/'.join(spec.transports)} "
                f"on {spec.listen_address}:{spec.port}, {len(spec.nodes)} nodes, "
                f"{len(spec.phones)} desk phones, control socket {spec.control_socket}")

    # Carriers' calls and phones' registrations reach nothing once it is gone.
    return await supervise(edge, "the SIP edge (kamailio)", banner)


async def serve_dashboards(spec: DashboardsSpec) -> int:
    """HAProxy in front of the nodes' dashboards until SIGTERM or SIGINT (0) or until it
    exits by itself (1). Raises HaproxyUnavailable and ValueError (``haproxy -c``
    refuses its file, or a setting is wrong: nothing is started)."""
    proxy = DashboardsEdge(spec, Path(spec.config_dir), to_stderr=True)

    def banner(pid: int) -> str:
        return (f"the dashboards' proxy runs: haproxy pid={pid}, HTTPS on "
                f"{spec.listen_address}:{spec.port}, {len(spec.nodes)} nodes' dashboards, "
                f"stats socket {spec.stats_socket}")

    return await supervise(proxy, "the dashboards' proxy (haproxy)", banner)


async def supervise(program: Program, what: str, banner: Callable[[int], str]) -> int:
    """Start ``program``, and run it until SIGTERM or SIGINT (0) or until it exits by
    itself (1)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stopping.set)
    try:
        await program.start()
        process = program.process
        assert process is not None
        log.info("%s", banner(process.pid))
        exited = asyncio.ensure_future(process.wait())
        asked = asyncio.ensure_future(stopping.wait())
        await asyncio.wait((exited, asked), return_when=asyncio.FIRST_COMPLETED)
        for waiter in (exited, asked):
            waiter.cancel()
        await asyncio.gather(exited, asked, return_exceptions=True)
        if not stopping.is_set():
            # Say so, and exit for the service manager to start it again.
            print(f"switchboard: {what} exited by itself (status "
                  f"{process.returncode}): its log above says why", file=sys.stderr)
            return 1
        log.info("stopping %s pid=%s", what, process.pid)
        return 0
    finally:
        await program.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)
