"""`switchboard edge run`: the cluster's SIP edge (Kamailio) as a service of its own
machine, the way `switchboard run` serves a node with its embedded Asterisk.

The edge is not started by `switchboard run`: it is the one machine carriers and desk
phones reach, in front of every node, so it lives and dies apart from any node. This
renders its files from the settings and the database (the desk phones' accounts), has
Kamailio check them, runs it in the foreground as its own account with its log on our
stderr (the service's journal), and stops it on SIGTERM or Ctrl-C. A Kamailio that dies
by itself ends the command with status 1, so a service manager starts both again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from pbx.edge import Edge
from pbx.kamailio_config import EdgeSpec, KamailioUnavailable

log = logging.getLogger(__name__)

# The exit status of an edge whose Kamailio refuses its rendered files: as a wrong
# setting, starting again would only repeat it (the unit's RestartPreventExitStatus).
REFUSED = 2
# No Kamailio to run (not installed, no account for it), or it would not start: as
# `switchboard run` without an Asterisk.
UNAVAILABLE = 3


def main(spec: EdgeSpec) -> int:
    """`switchboard edge run`: its exit status, and why on stderr when it is not 0."""
    try:
        return asyncio.run(serve(spec))
    except KamailioUnavailable as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except ValueError as exc:  # kamailio -c refuses the rendered files
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
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stopping.set)
    try:
        await edge.start()
        process = edge.process
        assert process is not None
        log.info("the SIP edge runs: kamailio pid=%s, SIP %s on %s:%s, %d nodes, %d desk "
                 "phones, control socket %s", process.pid, "/".join(spec.transports),
                 spec.listen_address, spec.port, len(spec.nodes), len(spec.phones),
                 spec.control_socket)
        exited = asyncio.ensure_future(process.wait())
        asked = asyncio.ensure_future(stopping.wait())
        await asyncio.wait((exited, asked), return_when=asyncio.FIRST_COMPLETED)
        for waiter in (exited, asked):
            waiter.cancel()
        await asyncio.gather(exited, asked, return_exceptions=True)
        if not stopping.is_set():
            # Carriers' calls and phones' registrations now reach nothing: say so, and
            # exit for the service manager to start the edge again.
            print(f"switchboard: the SIP edge (kamailio) exited by itself (status "
                  f"{process.returncode}): its log above says why", file=sys.stderr)
            return 1
        log.info("stopping the SIP edge pid=%s", process.pid)
        return 0
    finally:
        await edge.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)
