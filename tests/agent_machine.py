"""An agent's machine that is not this one: a network namespace joined to the host by a
veth pair, with its own address, and Debian's Chromium running inside it.

What the dashboard, the login throttle, the audit log and the PBX see of it is what
they would see of a PC on the call centre's LAN: another address (10.77.0.2), reaching
the product at the host's address on that link (10.77.0.1), never loopback. Its packets
never leave this machine: the namespace has that one link and no route beyond it.

The names are fixed, so a run that was killed leaves nothing the next run does not
remove first; everything is removed afterwards, however the test ended.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMESPACE = "sb-agent-pc"
HOST_LINK = "sb-agent0"  # the host's end of the veth pair
AGENT_LINK = "sb-agent1"  # the agent's end, inside the namespace
HOST_ADDRESS = "10.77.0.1"
AGENT_ADDRESS = "10.77.0.2"
PREFIX = 24


@dataclass(frozen=True)
class AgentMachine:
    namespace: str
    host_address: str  # where the agent's machine reaches the product
    address: str  # the agent's machine's own address
    link: str = AGENT_LINK  # its end of the veth, inside the namespace (where faults go)

    def chromium(self, chromium: Path, home: Path) -> Path:
        """A launcher Playwright starts as its browser: Chromium inside the namespace,
        with ``home`` as its home (where its certificate store lives). Playwright
        talks to it over pipes, which cross the namespace."""
        launcher = home / "chromium-on-the-agents-machine"
        launcher.write_text(f'#!/bin/sh\nexec ip netns exec {self.namespace} '
                            f'env HOME={home} {chromium} "$@"\n')
        launcher.chmod(0o755)
        return launcher


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def _remove() -> list[str]:
    """Remove the namespace and the link; what could not be removed, if anything."""
    left = []
    for args in (("link", "del", HOST_LINK), ("netns", "del", NAMESPACE)):
        done = _ip(*args)
        gone = "Cannot find device" in done.stderr or "No such file" in done.stderr
        if done.returncode != 0 and not gone:
            left.append(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return left


@contextlib.contextmanager
def agent_machine() -> Iterator[AgentMachine]:
    """The namespace and its link, up; removed afterwards. Fails (never skips) saying
    why when this machine cannot make one (no root, no iproute2)."""
    _remove()  # what a killed run left behind
    steps = [
        ("netns", "add", NAMESPACE),
        ("link", "add", HOST_LINK, "type", "veth", "peer", "name", AGENT_LINK),
        ("link", "set", AGENT_LINK, "netns", NAMESPACE),
        ("addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", HOST_LINK),
        ("link", "set", HOST_LINK, "up"),
        ("-n", NAMESPACE, "addr", "add", f"{AGENT_ADDRESS}/{PREFIX}", "dev", AGENT_LINK),
        ("-n", NAMESPACE, "link", "set", AGENT_LINK, "up"),
        ("-n", NAMESPACE, "link", "set", "lo", "up"),
    ]
    try:
        for step in steps:
            try:
                done = _ip(*step)
            except FileNotFoundError:
                pytest.fail("the `ip` command is missing: apt-get install iproute2 "
                            "(`make test` does it)", pytrace=False)
            if done.returncode != 0:
                pytest.fail(f"cannot make the agent's machine (a network namespace): "
                            f"ip {' '.join(step)}: {done.stderr.strip()} (it needs root "
                            "or CAP_NET_ADMIN)", pytrace=False)
        yield AgentMachine(NAMESPACE, HOST_ADDRESS, AGENT_ADDRESS)
    finally:
        left = _remove()
        assert not left, f"the agent's machine was not removed: {left}"


def trust_ca(home: Path, ca: Path) -> None:
    """Make ``ca`` a trusted root in the certificate store Chromium reads under
    ``home`` (NSS's ~/.pki/nssdb), as an agent's PC trusts the call centre's CA."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-t", "C,,", "-n", "Switchboard test CA", "-i", str(ca)]):
        try:
            done = subprocess.run(["certutil", "-d", f"sql:{nssdb}", *args],
                                  capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            pytest.fail("certutil is missing: apt-get install libnss3-tools (`make test` "
                        "does it)", pytrace=False)
        if done.returncode != 0:
            pytest.fail(f"certutil {args[0]} failed: {done.stderr.strip()}", pytrace=False)
