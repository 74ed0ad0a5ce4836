"""The fault harness: what the reliability cases (issue 16, R1-R25) break, on real parts.

Asterisk (an :class:`~pbx.runtime.AsteriskInstance` the test owns):

- :func:`paused`: SIGSTOP, then SIGCONT however the block ends. A real black hole: the
  process keeps every socket open and answers nothing, with no RST and no FIN, as a hung
  host or a firewall's DROP does. Its SIP, RTP, ARI and AMI go silent together.
- :func:`restart_in_place`: a real ``core restart now``: Asterisk hangs up every channel
  and re-executes itself (same PID, same configuration tree); returns once it is fully
  booted and ARI answers. :meth:`AsteriskInstance.kill` + ``start()`` is the crash, and
  :meth:`AsteriskInstance.restart` the stop-and-start, of the same instance.

A browser (Chromium, whose pid :func:`chromium_pid` finds by a marker in its arguments):

- :func:`frozen_tree`: SIGSTOP a process and every process under it (Chromium's
  renderers and network service), SIGCONT however the block ends. The tab's sockets
  stay open and its kernel still acknowledges: a laptop put to sleep, a hung page.

One path to Asterisk (ARI's HTTP and events socket, AMI):

- :class:`TcpPath`: a relay on loopback that the client under test connects through.
  ``cut()`` closes every connection both ways (the client sees the socket end at once,
  as when a proxy dies); ``black_hole()`` forwards nothing more, in either direction,
  while keeping the sockets open (the kernel still accepts what the client sends, as a
  DROP leaves a client's retransmissions to time out), until ``restore()`` lets the
  held bytes through. ``inject()`` slips bytes of the test's own into what Asterisk
  sends (garbage on the link, R4), between two of Asterisk's messages. Why a relay and
  not iptables: ARI and AMI listen on 127.0.0.1 by design, and moving them onto a veth
  address would change the configuration under test; rules (or ``tc``) on the host's
  ``lo`` would hit every other engineer's tests sharing the machine. A caller's SIP
  and RTP are black-holed by pausing the far end's process (the carrier Asterisk), a
  desk phone's by its test task going silent: what the PBX sees is the same.

The link of an agent's PC (a network namespace joined by a veth, tests/agent_machine.py):

- :class:`LinkFaults`: nftables inside that namespace, on its link only, per protocol,
  far-end port and :class:`Direction` (:class:`Traffic`: ``Traffic.udp()`` is all of a
  browser's media, ``Traffic.tcp(port)`` its SIP WebSocket). ``black_hole()`` drops at
  the link (nothing answers, the sender's stack says nothing: a dead Wi-Fi);
  ``cut()`` rejects, and for TCP resets the connections open now at both ends
  (``ss -K``), as a NAT box dropping its state does; ``restore()`` lifts every fault.
  The tables have fixed names: entering removes what a killed run left, leaving
  removes them however the test ended. ``tc netem`` is not offered: the kernel here
  has no netem (loss is a drop of every packet instead).

The controller (``switchboard run`` in its own process, :class:`tests.product_run.Product`):

- :func:`kill_controller_at`: kill -9 once the product's own ledger shows a named point
  of a handoff (offered, ringing the agent, connected). Each is a state the flow rests in
  until someone acts (an agent clicks, a phone answers, a caller hangs up), so the kill
  lands in it, not a few milliseconds later.

What a test leaves behind:

- :class:`Baseline`: descriptors, threads and asyncio tasks of this process, taken
  before an integration module and required back afterwards (R13); the channels,
  bridges and open ledger rows are checked per test (``quiet_pair``, ``rig``).

What the links counted: :func:`scraped`, their figures as /metrics serves them.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.product_run import Product
from tests.waiting import until
from web.app_metrics import EventLink, register_process_metrics
from web.bench.faults import (
    Baseline,
    Direction,
    FaultUnavailable,
    LinkFaults,
    TcpPath,
    Traffic,
    chromium_pid,
    frozen_tree,
    paused,
    restart_in_place,
)

__all__ = ["Baseline", "Direction", "FaultUnavailable", "LinkFaults", "TcpPath", "Traffic",
           "back_to", "chromium_pid", "frozen_tree", "kill_controller_at", "paused",
           "restart_in_place", "scraped"]


def scraped(ari: EventLink | None = None, ami: EventLink | None = None) -> dict[str, float]:
    """The event links' counters as /metrics serves them (the same collectors, rendered
    and parsed back), as ``{"bad_frames{ari}": 2.0, "handling_delayed{ari,StasisStart}":
    1.0, ...}``."""
    registry = CollectorRegistry()
    register_process_metrics(registry, telephony_status=lambda: "ok", ari=lambda: ari,
                             ami=lambda: ami, calls_live=lambda: 0)
    figures = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.startswith("switchboard_event_"):
                name = sample.name.removeprefix("switchboard_event_").removeprefix("link_")
                labels = ",".join(sample.labels.values())
                figures[f"{name.removesuffix('_total')}{{{labels}}}"] = sample.value
    return figures


async def kill_controller_at(product: Product, point: Callable[[], Awaitable[object]],
                             name: str, within: float = 30) -> None:
    """kill -9 the product once ``point`` (a look at its ledger) holds."""
    await until(point, within, why=f"the handoff never reached {name}")
    await product.signal(signal.SIGKILL)


async def back_to(before: Baseline, within: float = 15) -> None:
    """Wait until nothing opened since ``before`` is left; fail listing what is."""
    leaks: list[str] = []

    def settled() -> bool:
        nonlocal leaks
        leaks = Baseline.now().leaks_since(before)
        return not leaks

    await until(settled, within, step=0.1, why=lambda: f"left behind: {leaks}")
