"""The cluster's machines on one box: each node a network namespace on a bridge.

A node is a namespace holding its Asterisk and its `switchboard run`: ARI and AMI stay
on the node's own loopback, out of reach of the other nodes, as on a host of its own,
and its SIP, RTP and dashboard listen on its address on the bridge. The edge
(Kamailio), the carrier and PostgreSQL stay in this namespace, on the bridge's address.
Killing a node is killing its host: every process in its namespace, and its link down.

The addresses are the project's own test hosts (10.78.0.0/24, on a bridge that has no
route off this machine). The names are fixed, so what a killed run left is removed
first; everything is removed afterwards, however the run ended, and a second run
finds nothing in its way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

BRIDGE = "sb-cluster0"
HOST_ADDRESS = "10.78.0.1"  # the edge, the carrier and PostgreSQL
PREFIX = 24
LOCK = "/run/lock/switchboard-cluster-hosts"


class HostsUnavailable(RuntimeError):
    """This machine cannot make the namespaces (no root, no iproute2)."""


@dataclass(frozen=True)
class NodeHost:
    name: str
    namespace: str
    address: str
    link: str  # the bridge's end of the node's veth pair

    def argv(self, *command: str) -> list[str]:
        """``command`` run on this node's host (in its namespace)."""
        return ["ip", "netns", "exec", self.namespace, *command]


def node_hosts(names: tuple[str, ...]) -> dict[str, NodeHost]:
    return {name: NodeHost(name, f"sb-{name}", f"10.78.0.{11 + i}", f"sb-{name}0")
            for i, name in enumerate(names)}


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def kill_host(node: NodeHost) -> int:
    """The node's host dies: its link goes down and every process in its namespace is
    killed (SIGKILL); how many there were."""
    _ip("link", "set", node.link, "down")
    killed = 0
    # Bounded: a process forked meanwhile is found by the next pass.
    for _ in range(5):
        pids = [int(p) for p in _ip("netns", "pids", node.namespace).stdout.split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def _remove(nodes: dict[str, NodeHost]) -> list[str]:
    """Remove the namespaces, links and bridge; what could not be removed, if any."""
    left = []
    for node in nodes.values():
        if node.namespace in _ip("netns", "list").stdout.split():
            kill_host(node)
    steps = [(("link", "del", n.link), ("netns", "del", n.namespace)) for n in nodes.values()]
    for args in [step for pair in steps for step in pair] + [("link", "del", BRIDGE)]:
        done = _ip(*args)
        gone = "Cannot find device" in done.stderr or "No such file" in done.stderr
        if done.returncode != 0 and not gone:
            left.append(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return left


@contextlib.contextmanager
def cluster_hosts(names: tuple[str, ...]) -> Iterator[dict[str, NodeHost]]:
    """The bridge (this namespace's address on it: HOST_ADDRESS) and one namespace per
    node, up; all removed afterwards. A second run at the same time (a benchmark, a test
    in another checkout) waits for this one: the names are fixed."""
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with _hosts(names) as nodes:
            yield nodes


@contextlib.contextmanager
def _hosts(names: tuple[str, ...]) -> Iterator[dict[str, NodeHost]]:
    nodes = node_hosts(names)
    _remove(nodes)  # what a killed run left behind
    steps = [("link", "add", BRIDGE, "type", "bridge"),
             ("addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", BRIDGE),
             ("link", "set", BRIDGE, "up")]
    for node in nodes.values():
        inside = f"{node.link[:-1]}1"
        steps += [("netns", "add", node.namespace),
                  ("link", "add", node.link, "type", "veth", "peer", "name", inside),
                  ("link", "set", inside, "netns", node.namespace),
                  ("link", "set", node.link, "master", BRIDGE),
                  ("link", "set", node.link, "up"),
                  ("-n", node.namespace, "addr", "add", f"{node.address}/{PREFIX}", "dev",
                   inside),
                  ("-n", node.namespace, "link", "set", inside, "up"),
                  ("-n", node.namespace, "link", "set", "lo", "up")]
    try:
        for step in steps:
            try:
                done = _ip(*step)
            except FileNotFoundError as exc:
                raise HostsUnavailable("iproute2's `ip` is not installed") from exc
            if done.returncode != 0:
                raise HostsUnavailable(f"ip {' '.join(step)}: {done.stderr.strip()} (the "
                                       "cluster's namespaces need root)")
        yield nodes
    finally:
        left = _remove(nodes)
        if left:
            raise HostsUnavailable("left behind: " + "; ".join(left))
