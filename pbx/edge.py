"""Kamailio, the cluster's SIP edge, as a process: started from its rendered files,
asked over its control socket which nodes it dispatches to, stopped.

Kamailio is Debian's package, run as it is (no build, no root file system): the edge
holds no call state of its own beyond a transaction, so it needs nothing of
Switchboard's but its files (:mod:`pbx.kamailio_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from pbx.edge_daemons import log_tail, stop_group
from pbx.kamailio_config import (
    CONFIG_FILE,
    EdgeSpec,
    KamailioUnavailable,
    check_syntax,
    find_binary,
    write_files,
)

log = logging.getLogger(__name__)

ACCOUNT = "kamailio"


@dataclass(frozen=True)
class NodeState:
    """One node as the edge's dispatcher sees it."""

    uri: str
    name: str
    # Active: new calls go to it. Inactive: it did not answer an OPTIONS probe or an
    # INVITE; it is probed until it answers again.
    active: bool


def parse_dispatcher_list(text: str) -> list[NodeState]:
    """``kamcmd dispatcher.list``'s answer: a DEST block per node, whose FLAGS start with
    A (active), I (inactive) or D (disabled by hand), then P while it is probed."""
    nodes: list[NodeState] = []
    for block in re.split(r"\bDEST:", text)[1:]:
        uri = re.search(r"URI:\s*(\S+)", block)
        flags = re.search(r"FLAGS:\s*(\S+)", block)
        duid = re.search(r"DUID:\s*(\S+)", block)
        if uri and flags:
            nodes.append(NodeState(uri.group(1), duid.group(1) if duid else "",
                                   flags.group(1).startswith("A")))
    return nodes


@dataclass(frozen=True)
class SipAnswer:
    status: int
    # The Server or User-Agent header, if the node names its software (Switchboard's
    # Asterisk does not, to scanners).
    software: str


async def sip_options(host: str, port: int, timeout: float = 2.0) -> SipAnswer | None:
    """One SIP OPTIONS over UDP to ``host:port``, as the edge's probe asks it; the first
    answer, or None when nothing answered within ``timeout`` (sent again every 0.5 s,
    SIP's T1, as a lost datagram would be). Any answer, even a refusal (401, 403), says
    the node's SIP stack is up."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[bytes] = loop.create_future()

    class Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not answered.done() and not data.startswith(b"SIP/2.0 1"):
                answered.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Probe, remote_addr=(host, port))
    try:
        local_host, local_port = transport.get_extra_info("sockname")[:2]
        request = "\r\n".join((
            f"OPTIONS sip:{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {local_host}:{local_port};branch=z9hG4bK{secrets.token_hex(8)}"
            ";rport",
            "Max-Forwards: 70",
            f"From: <sip:doctor@{local_host}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{host}:{port}>",
            f"Call-ID: {secrets.token_hex(12)}@{local_host}",
            "CSeq: 1 OPTIONS",
            "Content-Length: 0", "", "")).encode()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            transport.sendto(request)
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(asyncio.shield(answered),
                                              min(0.5, deadline - loop.time()))
                return _answer(data)
        return None
    finally:
        transport.close()


def _answer(data: bytes) -> SipAnswer | None:
    lines = data.decode(errors="replace").split("\r\n")
    status = re.match(r"SIP/2\.0 (\d{3})", lines[0])
    if status is None:
        return None
    software = next((line.split(":", 1)[1].strip() for line in lines[1:]
                     if line.lower().startswith(("server:", "user-agent:"))), "")
    return SipAnswer(int(status[1]), software)


async def control(spec: EdgeSpec, *command: str) -> str:
    """One command to the running edge over its control socket (Kamailio's kamcmd); its
    answer. KamailioUnavailable when nothing answers there."""
    kamcmd = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
    try:
        proc = await asyncio.create_subprocess_exec(
            kamcmd, "-s", f"unix:{spec.control_socket}", *command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError as exc:
        raise KamailioUnavailable("kamcmd is not installed (Debian: kamailio)") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise KamailioUnavailable("the edge's control socket did not answer in 5 s") from None
    if proc.returncode != 0:
        raise KamailioUnavailable(f"the edge's control socket: {(out + err).decode()}")
    return out.decode()


async def take_phones(spec: EdgeSpec) -> tuple[int, int]:
    """Give the running edge the phones' accounts ``spec`` names, without a restart (a
    restart would lose every registration: they live in its memory). Returns (accounts
    set, accounts removed); a removed account's phone is refused at its next REGISTER."""
    held = set(re.findall(r"^\s*name:\s*(\S+)\s*$",
                          await control(spec, "htable.dump", "phones"), re.MULTILINE))
    for phone in spec.phones:
        await control(spec, "htable.sets", "phones", phone.user, phone.password)
    gone = held - {phone.user for phone in spec.phones}
    for user in sorted(gone):
        await control(spec, "htable.delete", "phones", user)
    return len(spec.phones), len(gone)


async def registered_phones(spec: EdgeSpec) -> list[str]:
    """The SIP users whose phone is registered to the running edge now."""
    return sorted(re.findall(r"^\s*AoR:\s*(\S+)\s*$",
                             await control(spec, "ul.dump", "brief"), re.MULTILINE))


class Edge:
    """A Kamailio process serving ``spec``, its files written to ``folder`` (which must be
    ``spec.config_dir`` as this machine sees it). Its log goes to kamailio.log there, or
    with ``to_stderr`` to this process's stderr (`switchboard edge run`: the service's
    journal)."""

    def __init__(self, spec: EdgeSpec, folder: Path, binary: str | None = None,
                 to_stderr: bool = False) -> None:
        self.spec = spec
        self.folder = folder
        self.binary = binary or find_binary()
        self.log_file = None if to_stderr else folder / "kamailio.log"
        self.process: asyncio.subprocess.Process | None = None

    def _write(self) -> list[str]:
        """Its files, its run folder, and the options that drop it to its account."""
        run_dir = Path(self.spec.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            write_files(self.spec, self.folder)
            return []
        # Started by root, Kamailio reads its files and binds its ports as root, then
        # runs as Debian's `kamailio` account, which owns only its run folder (the
        # control socket) and may read its files (kamailio.cfg holds the phones'
        # passwords), not change them.
        try:
            user, group = pwd.getpwnam(ACCOUNT), grp.getgrnam(ACCOUNT)
        except KeyError as exc:
            raise KamailioUnavailable(f"no {ACCOUNT} account to run the edge as (Debian's "
                                      "kamailio package makes one)") from exc
        write_files(self.spec, self.folder, group.gr_gid)
        os.chown(run_dir, user.pw_uid, group.gr_gid)
        return ["-u", ACCOUNT, "-g", ACCOUNT]

    async def start(self, timeout: float = 15) -> None:
        """Write its files, have Kamailio check them (ValueError with its complaints: it
        is not started), start it, and return once its control socket answers."""
        drop = self._write()  # a few small files, once, at start-up
        await asyncio.to_thread(check_syntax, self.folder / CONFIG_FILE, self.binary)
        with contextlib.ExitStack() as files:
            out = (None if self.log_file is None
                   else files.enter_context(open(self.log_file, "ab")))  # noqa: ASYNC230
            self.process = await asyncio.create_subprocess_exec(
                # -DD: stay in the foreground, a child of ours; -E: log to stderr (ours,
                # or the log file).
                self.binary, "-DD", "-E", "-f", str(self.folder / CONFIG_FILE),
                "-Y", self.spec.run_dir, *drop,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                # Its own process group: a Ctrl-C at a terminal reaches us, and we stop it.
                start_new_session=True,
            )
        log.info("starting the SIP edge pid=%s sip=%s:%s", self.process.pid,
                 self.spec.listen_address, self.spec.port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.returncode is not None:
                raise KamailioUnavailable(
                    f"the SIP edge exited at start (status {self.process.returncode}): "
                    + self._tail())
            with contextlib.suppress(KamailioUnavailable):
                await self.nodes()
                return
            if loop.time() > deadline:
                await self.stop()
                raise KamailioUnavailable(
                    f"the SIP edge did not answer within {timeout:.0f} s: {self._tail()}")
            await asyncio.sleep(0.1)

    async def nodes(self) -> list[NodeState]:
        """The dispatcher's nodes and whether each gets new calls, asked over the control
        socket (Kamailio's kamcmd)."""
        return parse_dispatcher_list(await control(self.spec, "dispatcher.list"))

    async def stop(self, timeout: float = 10) -> None:
        """SIGTERM: Kamailio's main process ends its children and exits (killed if it has
        not within ``timeout``). Then whatever of its group is left is killed: the
        children of a main process that died by itself, or a child that hung."""
        process, self.process = self.process, None
        await stop_group(process, timeout)

    def _tail(self, lines: int = 15) -> str:
        return log_tail(self.log_file, lines)
