"""The harness's link faults (tests/faults.py, LinkFaults) on a real network namespace:
what each one does to real TCP and UDP sockets across the agent's-PC veth, that
they are lifted, and that nothing of them outlives the block, a killed run's included.

The sockets on the agent's side are made by a thread that has entered the namespace
(setns): a socket belongs to the namespace it was made in, wherever it is used after.
No Asterisk here: the browser tests (tests/e2e/test_remote_agent.py) cut the agent's
softphone this way.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from tests.agent_machine import AgentMachine, agent_machine
from tests.faults import Direction, LinkFaults, Traffic

pytestmark = [pytest.mark.integration]

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
# Long enough for a packet across a veth on a loaded machine; a packet that has not come
# by then was dropped (the window in which nothing must arrive).
WINDOW_S = 0.5


@pytest.fixture
def machine() -> Iterator[AgentMachine]:
    with agent_machine() as made:
        yield made


def inside(machine: AgentMachine, make: Callable[[], T]) -> T:
    """``make()`` run in a thread that entered the agent's namespace (and then ends)."""
    def entered() -> T:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{machine.namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the agent's namespace")
        finally:
            os.close(fd)
        return make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(entered).result()


def arrives(receiver: socket.socket) -> bool:
    receiver.settimeout(WINDOW_S)
    try:
        return bool(receiver.recv(64))
    except TimeoutError:
        return False


def test_link_faults_drop_and_reset_per_protocol_and_direction_and_leave_nothing(
    machine: AgentMachine,
) -> None:
    # What a killed run left: the harness's table, dropping everything.
    subprocess.run(["ip", "netns", "exec", machine.namespace, "nft", "-f", "-"], check=True,
                   timeout=30, text=True, input=(
                       f'table {LinkFaults.DROPS} {{ chain egress {{ type filter hook egress '
                       f'device "{machine.link}" priority 0; policy drop; }}\n}}\n'))
    with socket.create_server((machine.host_address, 0)) as listener, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as host_udp:
        listener.settimeout(5)
        host_udp.bind((machine.host_address, 0))
        tcp_port = listener.getsockname()[1]

        def agent_sockets() -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((machine.address, 0))
            udp.connect(host_udp.getsockname())
            return socket.create_connection((machine.host_address, tcp_port), 5), udp

        with LinkFaults(machine.namespace, machine.link) as link:
            # The leftover DROP went on entering: both paths work.
            agent_tcp, agent_udp = inside(machine, agent_sockets)
            host_tcp, _ = listener.accept()
            with agent_tcp, agent_udp, host_tcp:
                agent_udp.send(b"voice")
                assert arrives(host_udp)

                # Media black-holed one way: the agent's packets vanish, the PBX's
                # still arrive, and TCP is untouched.
                link.black_hole(Traffic.udp(), Direction.OUT)
                agent_udp.send(b"voice")  # sent without an error: lost on the way
                assert not arrives(host_udp)
                host_udp.sendto(b"voice", agent_udp.getsockname())
                assert arrives(agent_udp)
                agent_tcp.sendall(b"sip")
                assert arrives(host_tcp)
                link.restore()
                agent_udp.send(b"voice")
                assert arrives(host_udp)

                # The TCP port cut: the open connection is reset at both ends at
                # once, and a new one is refused until the path is restored.
                link.cut(Traffic.tcp(tcp_port))
                with pytest.raises(OSError):
                    agent_tcp.sendall(b"sip")
                host_tcp.settimeout(5)
                with pytest.raises(ConnectionResetError):
                    host_tcp.recv(64)
                with pytest.raises(ConnectionRefusedError):
                    inside(machine, agent_sockets)
                agent_udp.send(b"voice")  # UDP was not part of the cut
                assert arrives(host_udp)
            link.restore()
            again, udp = inside(machine, agent_sockets)
            again.close()
            udp.close()
            listener.accept()[0].close()
            link.black_hole(Traffic.udp())
        assert link.tables() == ""  # gone with the block, a fault in force included

        # However the block ends.
        with pytest.raises(RuntimeError), LinkFaults(machine.namespace, machine.link) as link:
            link.cut(Traffic.tcp(tcp_port))
            raise RuntimeError("the test failed mid-fault")
        assert link.tables() == ""
