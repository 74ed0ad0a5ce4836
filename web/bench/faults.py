"""The faults the reliability cases (issue 16) inject, shared by the tests' harness
(tests/faults.py, which documents each) and the fault soak (`switchboard bench faults`):
Asterisk frozen or restarted in place, a browser's processes frozen, a TCP path to it cut,
black-holed or fed bytes of the test's own, the link of a network namespace (an agent's
PC) cut or black-holed per protocol, port and direction, and what this process holds
(descriptors, threads, tasks) to tell a leak from a baseline."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pbx.ari import basic_auth_header
from pbx.runtime import AsteriskInstance, AsteriskUnavailable
from web.bench.waiting import until


async def ari_get(instance: AsteriskInstance, path: str) -> tuple[int, Any]:
    """One ARI GET over plain HTTP (not the client under test): (status, JSON body)."""
    async with (
        aiohttp.ClientSession(headers=basic_auth_header(*instance.ari_auth)) as session,
        session.get(f"{instance.ari_url}{path}", timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        return resp.status, await resp.json() if resp.status == 200 else None


@contextlib.asynccontextmanager
async def paused(instance: AsteriskInstance) -> AsyncIterator[float]:
    """Asterisk frozen (SIGSTOP) for the block; yields when it was frozen (monotonic)."""
    pid = instance.pid
    assert pid is not None and instance.running, f"{instance.spec.name} is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)


def chromium_pid(marker: str) -> int:
    """The Chromium started with ``marker`` among its arguments: its browser process (its
    renderers, GPU and network service are children, each with a ``--type=``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes()
                if marker.encode() in argv and b"--type=" not in argv:
                    found.append(int(entry.name))
    assert len(found) == 1, f"one browser process with {marker} expected, found {found}"
    return found[0]


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                # ppid is the 2nd field after the command's ")" (the name may hold spaces).
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


@contextlib.contextmanager
def frozen_tree(root: int) -> Iterator[float]:
    """``root`` and its descendants frozen (SIGSTOP) for the block; yields when."""
    pids = _tree(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def restart_in_place(instance: AsteriskInstance, within: float = 60) -> None:
    """``core restart now`` and back: fully booted, ARI answering, the same process."""
    pid = instance.pid
    # The console's own connection goes with the restart: its answer may never come.
    with contextlib.suppress(AsteriskUnavailable, TimeoutError):
        await instance.cli("core restart now", timeout=5)

    async def booted() -> bool:
        try:
            out = await instance.cli("core waitfullybooted", timeout=5)
            status, _ = await ari_get(instance, "/asterisk/info")
        except (AsteriskUnavailable, TimeoutError, OSError, aiohttp.ClientError):
            return False
        return "fully booted" in out and status == 200

    await until(booted, within, step=0.2, why=f"{instance.spec.name} did not come back")
    assert instance.pid == pid and instance.running, "core restart now replaced the process"


@dataclass
class TcpPath:
    """A loopback relay in front of one TCP port of Asterisk, which a test can cut or
    black-hole (see the module's docstring)."""

    target_port: int
    port: int = 0
    accepted: int = 0
    """Connections the client opened through the path (each reconnect adds one)."""
    sent: int = 0
    """Bytes the client sent into the path, held ones included (an action on its way)."""
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _links: set[asyncio.Task[None]] = field(default_factory=set)
    _to_client: dict[asyncio.Task[None], _Downstream] = field(default_factory=dict)

    async def __aenter__(self) -> TcpPath:
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._flowing.set()
        await self._close_links()
        await self._server.wait_closed()

    def url(self, scheme: str = "http", path: str = "/ari") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def cut(self) -> None:
        """End every connection now; new ones pass again."""
        await self._close_links()

    def black_hole(self) -> None:
        """Nothing passes either way, on connections open now and new ones."""
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()

    async def inject(self, data: bytes, *, into: str = "", boundary: bytes = b"") -> None:
        """Send ``data`` to the client as if Asterisk had, on every open connection whose
        first request contains ``into`` (b"GET /ari/events" picks the event socket out of
        the REST ones). It goes out once what Asterisk sent so far ends with ``boundary``
        (AMI: a blank line), so it never lands inside one of Asterisk's messages."""
        targets = [d for d in self._to_client.values() if into.encode() in d.first_request]
        assert targets, f"no open connection through the path asked for {into!r}"
        await asyncio.gather(*(d.inject(data, boundary) for d in targets))

    async def _close_links(self) -> None:
        links = list(self._links)
        for link in links:
            link.cancel()
        await asyncio.gather(*links, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        server_w: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a new connection gets no answer, not a refusal
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            down = self._to_client[task] = _Downstream(client_w)
            await asyncio.gather(self._pump(client_r, server_w, first=down),
                                 self._pump(server_r, client_w, down=down))
        except OSError:
            pass  # Asterisk refused the connection: the client sees its socket end
        except asyncio.CancelledError:
            # cut(): the connection's end is this task's normal end. Left as a
            # cancellation, asyncio's server callback logs it as an error.
            pass
        finally:
            self._links.discard(task)
            self._to_client.pop(task, None)
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *,
                    first: _Downstream | None = None, down: _Downstream | None = None) -> None:
        # Either side's end (or reset) closes the other's, so the pair ends together.
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if first is not None:
                    self.sent += len(data)
                await self._flowing.wait()  # held, as a DROP holds a retransmitting sender
                if first is not None and not first.first_request:
                    first.first_request = data[:200]
                if down is not None:
                    await down.forward(data)
                else:
                    dst.write(data)
                    await dst.drain()
        dst.close()


@dataclass
class _Downstream:
    """What Asterisk sends one client through a :class:`TcpPath`, and what a test slips
    in between its messages."""

    writer: asyncio.StreamWriter
    first_request: bytes = b""
    tail: bytes = b""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def forward(self, data: bytes) -> None:
        async with self._lock:
            self.writer.write(data)
            self.tail = (self.tail + data)[-16:]
            await self.writer.drain()

    async def inject(self, data: bytes, boundary: bytes, within: float = 10) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            async with self._lock:  # not in the middle of forwarding one of Asterisk's
                if self.tail.endswith(boundary):
                    self.writer.write(data)
                    await self.writer.drain()
                    return
            assert loop.time() < deadline, "Asterisk's stream never reached a boundary"
            await asyncio.sleep(0.01)


class Direction(enum.StrEnum):
    """Which way a link fault stops packets, seen from inside the namespace."""

    OUT = "out"  # what the namespace sends (the agent's PC to the PBX)
    IN = "in"  # what it receives (the PBX to the agent's PC)
    BOTH = "both"

    @property
    def ways(self) -> tuple[Direction, ...]:
        return (Direction.OUT, Direction.IN) if self is Direction.BOTH else (self,)


@dataclass(frozen=True)
class Traffic:
    """One kind of packet on the link: a protocol and, optionally, the far end's ports
    (the PBX's WSS port; None: every port, as all of a browser's media is UDP)."""

    protocol: str  # "tcp" or "udp"
    ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"a link fault is tcp or udp, not {self.protocol!r}")

    @classmethod
    def tcp(cls, port: int) -> Traffic:
        return cls("tcp", (port, port))

    @classmethod
    def udp(cls) -> Traffic:
        return cls("udp")

    def match(self, way: Direction) -> str:
        """The nft expression for these packets going ``way``."""
        if self.ports is None:
            return f"meta l4proto {self.protocol}"
        low, high = self.ports
        # Out, the far end's port is the destination; in, it is the source.
        side = "dport" if way is Direction.OUT else "sport"
        return f"{self.protocol} {side} {low if low == high else f'{low}-{high}'}"


class FaultUnavailable(RuntimeError):
    """This machine cannot make the fault (a tool or a privilege is missing)."""


class LinkFaults:
    """Cuts and black holes on the one link of a network namespace, by nftables inside it.

    The rules live in the namespace's own tables, of fixed names, on that link only: the
    host and every other engineer's tests on the machine see nothing of them. Entering
    removes whatever a killed run left there; leaving removes them however the block
    ended.

    - ``black_hole(traffic, direction)``: dropped at the link itself (nft's netdev
      ingress and egress hooks), as on a dead Wi-Fi: packets vanish and the sender's
      own stack says nothing (a DROP in the OUTPUT chain would fail its sends with
      EPERM), so it learns only from its timers (the PBX's media timeout, TCP's
      retransmissions).
    - ``cut(traffic, direction)``: rejected, with a TCP reset or an ICMP port
      unreachable. For TCP the connections open now are reset too (``ss -K`` in the
      namespace, which sends the PBX a reset as it closes the socket), as when a NAT
      box or a VPN drops its state: both ends see their socket end at once, and a new
      connection is refused until ``restore()``.
    - ``restore()``: every fault lifted; the connections a cut ended stay ended.
    """

    DROPS = "netdev sb_faults"
    REJECTS = "inet sb_faults"

    def __init__(self, namespace: str, link: str) -> None:
        self.namespace = namespace
        self.link = link

    def __enter__(self) -> LinkFaults:
        self._remove()
        self._nft(f"""
            table {self.DROPS} {{
              chain egress {{ type filter hook egress device "{self.link}" priority 0; }}
              chain ingress {{ type filter hook ingress device "{self.link}" priority 0; }}
            }}
            table {self.REJECTS} {{
              chain output {{ type filter hook output priority 0; }}
              chain input {{ type filter hook input priority 0; }}
            }}""")
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def black_hole(self, traffic: Traffic, direction: Direction = Direction.BOTH) -> None:
        self._nft("\n".join(
            f"add rule {self.DROPS} {'egress' if way is Direction.OUT else 'ingress'} "
            f"{traffic.match(way)} drop" for way in direction.ways))

    def cut(self, traffic: Traffic, direction: Direction = Direction.BOTH) -> None:
        rules = []
        if traffic.protocol == "tcp":
            # The resets the cut itself sends must pass it, or the PBX never hears of it.
            rules.append(f"insert rule {self.REJECTS} output tcp flags & rst == rst accept")
            self._reset_connections(traffic)
            answer = "reject with tcp reset"
        else:
            answer = "reject"
        for way in direction.ways:
            chain, on = ("output", "oifname") if way is Direction.OUT else ("input", "iifname")
            rules.append(f'add rule {self.REJECTS} {chain} {on} "{self.link}" '
                         f"{traffic.match(way)} {answer}")
        self._nft("\n".join(rules))

    def restore(self) -> None:
        self._nft(f"flush table {self.DROPS}\nflush table {self.REJECTS}")

    @contextlib.contextmanager
    def black_holed(self, traffic: Traffic, direction: Direction = Direction.BOTH
                    ) -> Iterator[float]:
        """Black-holed for the block; yields when it began (monotonic)."""
        self.black_hole(traffic, direction)
        try:
            yield time.monotonic()
        finally:
            self.restore()

    @contextlib.contextmanager
    def cut_off(self, traffic: Traffic, direction: Direction = Direction.BOTH
                ) -> Iterator[float]:
        """Cut for the block; yields when it began (monotonic)."""
        self.cut(traffic, direction)
        try:
            yield time.monotonic()
        finally:
            self.restore()

    def tables(self) -> str:
        """What of the harness is in the namespace now (nothing outside a block)."""
        listed = self._run(["nft", "list", "tables"], what="nft").stdout
        return "\n".join(line for line in listed.splitlines() if "sb_faults" in line)

    def _reset_connections(self, traffic: Traffic) -> None:
        assert traffic.ports is not None, "a TCP cut names the far end's ports"
        low, high = traffic.ports
        self._run(["ss", "-K", "-t", "-n", "state", "established",
                   f"( dport >= :{low} and dport <= :{high} )"], what="ss")

    def _remove(self) -> None:
        for table in (self.DROPS, self.REJECTS):
            done = self._run(["nft", "delete", "table", *table.split()], what="nft",
                             check=False)
            if done.returncode != 0 and "No such file" not in done.stderr:
                raise FaultUnavailable(f"nft delete table {table} in {self.namespace}: "
                                       f"{done.stderr.strip()}")

    def _nft(self, script: str) -> None:
        self._run(["nft", "-f", "-"], what="nft", stdin=script)

    def _run(self, argv: Sequence[str], *, what: str, check: bool = True, stdin: str = ""
             ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(["ip", "netns", "exec", self.namespace, *argv],
                                  input=stdin, capture_output=True, text=True, timeout=30,
                                  check=False)
        except FileNotFoundError as exc:
            raise FaultUnavailable("`ip` is missing: apt-get install iproute2") from exc
        if "exec of" in done.stderr and "No such file" in done.stderr:
            package = "nftables" if what == "nft" else "iproute2"
            raise FaultUnavailable(f"`{argv[0]}` is missing: apt-get install {package} "
                                   "(`make setup-test` does it)")
        if check and done.returncode != 0:
            raise FaultUnavailable(f"{' '.join(argv)} in {self.namespace}: "
                                   f"{done.stderr.strip()} (it needs root or CAP_NET_ADMIN, "
                                   "and a kernel with nftables' netdev egress hook: 5.16+)")
        return done


@dataclass(frozen=True)
class Baseline:
    """This process's descriptors, threads and asyncio tasks at one moment."""

    fds: dict[int, str]
    threads: frozenset[str]
    tasks: frozenset[str]

    @classmethod
    def now(cls) -> Baseline:
        fds = {}
        for entry in Path("/proc/self/fd").iterdir():
            with contextlib.suppress(OSError):
                fds[int(entry.name)] = os.readlink(entry)
        current = asyncio.current_task()
        # The loop's default executor keeps its worker threads (asyncio_N) for the next
        # to_thread; a pool that grew to its bound is not a leak.
        threads = frozenset(f"{t.name}#{t.ident}" for t in threading.enumerate()
                            if not t.name.startswith("asyncio_"))
        return cls(fds, threads, frozenset(f"{t.get_name()}@{id(t):x}"
                                           for t in asyncio.all_tasks() if t is not current))

    def leaks_since(self, before: Baseline) -> list[str]:
        """What is here now and was not then; descriptors are counted (a number closed
        and opened again for something else is no leak), the new ones named."""
        leaks = [f"thread {t}" for t in self.threads - before.threads]
        leaks += [f"task {t}" for t in self.tasks - before.tasks]
        if len(self.fds) > len(before.fds):
            leaks += [f"fd {fd} -> {target}" for fd, target in self.fds.items()
                      if before.fds.get(fd) != target]
        return leaks
