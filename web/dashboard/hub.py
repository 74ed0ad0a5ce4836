"""The dashboards' live channel: one WebSocket per tab, a snapshot, then numbered deltas.

Every change gets the next sequence number and is kept in a bounded replay buffer. A
tab that reconnects with ``?since=N&epoch=E`` gets the deltas after N when they are
still buffered (and E says they come from this same process), else a fresh snapshot.

Each tab has its own bounded send queue and its own writer. Broadcasting never awaits
a socket: a tab on a bad Wi-Fi cannot delay the card that the other agents are about
to accept. A tab whose queue fills up, whose socket does not take a frame within the
send timeout, or whose unsent bytes pile up, is dropped; its page reconnects with
``since`` and catches up from the buffer or a snapshot.

The fast path: a delta is framed once (a server's WebSocket frames are not masked, so
the bytes are the same for every tab) and written straight to the transport of each
idle tab, without waking its writer task. With a thousand tabs the task wake-ups, not
the bytes, were what made the last tab wait (p99 ~90 ms before, on 2 cores). A tab
whose writer is busy or has messages queued gets the delta through its queue, so its
order is kept.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from handoff.agents import AgentRole
from handoff.store.transitions import utc_now
from web.dashboard.board import Audience, Board, Change

log = logging.getLogger(__name__)


class CloseCode:
    """WebSocket close codes the page acts on (4000-4999 are for applications)."""

    GOING_AWAY = 1001  # the server stops: reconnect later
    POLICY = 1008  # the tab broke the protocol (message flood): reconnect later
    RESYNC = 4000  # too slow: reconnect with since= and catch up
    SIGNED_OUT = 4401  # the session ended: go to the login page
    ROLE_CHANGED = 4403  # what this tab may see changed: reconnect for a new snapshot


UNSENT_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class HubLimits:
    # Deltas kept for reconnecting tabs: minutes of a busy call centre's card traffic.
    replay: int = 2048
    # Messages waiting for one tab. A healthy tab drains it within milliseconds; one
    # this far behind is better served by a snapshot than by a long backlog.
    queue: int = 128
    # Longest a single frame may take to leave for one tab before it counts as stalled.
    send_timeout_s: float = 5.0
    # Unsent bytes a tab may have in its socket's buffer before it counts as stalled
    # (hundreds of cards: a healthy tab is far below).
    unsent_bytes: int = UNSENT_BYTES


class Peer(Protocol):
    """The sending half of a WebSocket (aiohttp's WebSocketResponse, or a test double)."""

    async def send_str(self, data: str) -> None: ...


class RawSocket(Protocol):
    """The tab's connection under its WebSocket (an asyncio transport)."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


def text_frame(message: str) -> bytes:
    """One unmasked, unfragmented, uncompressed WebSocket text frame (RFC 6455 5.2)."""
    payload = message.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


@dataclass(frozen=True, slots=True)
class Resume:
    since: int | None = None
    epoch: str | None = None

    @classmethod
    def parse(cls, since: str | None, epoch: str | None) -> Resume:
        try:
            number = int(since) if since is not None else None
        except ValueError:
            number = None
        return cls(number if number is not None and number >= 0 else None, epoch)


class Client:
    """One connected tab."""

    def __init__(
        self, *, agent_id: int, role: AgentRole, session_hash: str, queue: int,
        raw: RawSocket | None = None, unsent_bytes: int = UNSENT_BYTES,
    ) -> None:
        self.agent_id = agent_id
        self.role = role
        self.session_hash = session_hash
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue)
        # Only for a WebSocket without compression, whose frames are the plain bytes.
        self._raw = raw
        self._unsent_bytes = unsent_bytes
        self._sending = False  # the writer task holds a message
        self._stopped = asyncio.Event()
        self.close_code = CloseCode.GOING_AWAY
        self.close_reason = ""

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def sees(self, audience: Audience) -> bool:
        return audience.includes(self.agent_id, self.role)

    def offer(self, message: str, frame: Callable[[], bytes] | None = None) -> bool:
        """Queue `message`, or write its `frame` at once when this tab is idle. False when
        the tab is too far behind (its queue or its socket's buffer is full)."""
        raw = self._raw
        if (frame is not None and raw is not None and not self._sending
                and self._queue.empty() and not raw.is_closing()):
            if raw.get_write_buffer_size() > self._unsent_bytes:
                return False
            raw.write(frame())
            return True
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def stop(self, code: int, reason: str) -> None:
        if not self.stopped:
            self.close_code, self.close_reason = code, reason
            self._stopped.set()

    async def serve(self, peer: Peer, reader: Awaitable[None], send_timeout_s: float) -> None:
        """Send queued messages until the tab goes, the reader ends, or the hub stops us.

        The three run as tasks owned by this call and are all finished when it
        returns: nothing is left running behind a closed socket.
        """
        tasks = [
            asyncio.ensure_future(self._write(peer, send_timeout_s)),
            asyncio.ensure_future(reader),
            asyncio.ensure_future(self._stopped.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ConnectionError):
                log.warning("dashboard socket of agent %s ended with %r", self.agent_id, result)

    async def _write(self, peer: Peer, send_timeout_s: float) -> None:
        while True:
            message = await self._queue.get()
            self._sending = True
            try:
                async with asyncio.timeout(send_timeout_s):
                    await peer.send_str(message)
            except TimeoutError:
                self.stop(CloseCode.RESYNC, "too slow")
                return
            finally:
                self._sending = False


class DashboardHub:
    def __init__(
        self,
        board: Board,
        *,
        limits: HubLimits | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.board = board
        self.limits = limits or HubLimits()
        self._clock = clock
        # Sequence numbers restart with the process; the epoch tells a tab that its
        # `since` belongs to an earlier process and cannot be resumed here.
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self._replay: deque[tuple[int, Audience, str]] = deque(maxlen=self.limits.replay)
        self._clients: set[Client] = set()

    @property
    def clients(self) -> frozenset[Client]:
        return frozenset(self._clients)

    # ---- tabs coming and going ----------------------------------------------------------

    def connect(
        self, *, agent_id: int, role: AgentRole, session_hash: str, resume: Resume,
        raw: RawSocket | None = None,
    ) -> Client:
        """Register a tab and queue its first messages: a resume or a snapshot.

        Nothing here awaits, so no delta can be published between computing what the
        tab has and registering it for what comes next. `raw` (the connection under an
        uncompressed WebSocket) lets deltas take the fast path.
        """
        client = Client(agent_id=agent_id, role=role, session_hash=session_hash,
                        queue=self.limits.queue, raw=raw,
                        unsent_bytes=self.limits.unsent_bytes)
        missed = self._missed(client, resume)
        if missed is not None and len(missed) < self.limits.queue:
            client.offer(self._encode({"type": "resumed", "seq": self.seq, "epoch": self.epoch,
                                       "replayed": len(missed)}))
            for message in missed:
                client.offer(message)
        else:
            client.offer(self._encode(self.snapshot_for(agent_id, role)))
        self._clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self._clients.discard(client)

    def snapshot_for(self, agent_id: int, role: AgentRole) -> dict[str, Any]:
        return {
            "type": "snapshot", "seq": self.seq, "epoch": self.epoch,
            "server_time": self._clock().isoformat(),
            **self.board.snapshot_for(agent_id, role),
        }

    def _missed(self, client: Client, resume: Resume) -> list[str] | None:
        since = resume.since
        if since is None or resume.epoch != self.epoch or since > self.seq:
            return None
        oldest = self._replay[0][0] if self._replay else self.seq + 1
        if since < oldest - 1:
            return None  # some of what the tab missed has left the buffer
        return [message for seq, audience, message in self._replay
                if seq > since and client.sees(audience)]

    # ---- sending ------------------------------------------------------------------------

    def publish(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.seq += 1
            message = self._encode({"type": "delta", "seq": self.seq, "op": change.op,
                                    **change.body})
            self._replay.append((self.seq, change.audience, message))
            frame = functools.cache(functools.partial(text_frame, message))
            for client in list(self._clients):
                if client.sees(change.audience) and not client.offer(message, frame):
                    log.info("dashboard tab of agent %s fell %d messages behind; dropped",
                             client.agent_id, self.limits.queue)
                    self.drop(client, CloseCode.RESYNC, "too slow")

    def drop(self, client: Client, code: int, reason: str) -> None:
        self._clients.discard(client)
        client.stop(code, reason)

    def drop_where(self, match: Callable[[Client], bool], code: int, reason: str) -> int:
        chosen = [client for client in self._clients if match(client)]
        for client in chosen:
            self.drop(client, code, reason)
        return len(chosen)

    def drop_session(self, session_hash: str) -> int:
        return self.drop_where(lambda c: c.session_hash == session_hash,
                               CloseCode.SIGNED_OUT, "signed out")

    def drop_sessions(self, session_hashes: set[str]) -> int:
        return self.drop_where(lambda c: c.session_hash in session_hashes,
                               CloseCode.SIGNED_OUT, "session ended")

    def drop_agent(self, agent_id: int, code: int, reason: str) -> int:
        return self.drop_where(lambda c: c.agent_id == agent_id, code, reason)

    def close_all(self) -> None:
        self.drop_where(lambda _c: True, CloseCode.GOING_AWAY, "server stopping")

    def session_hashes(self) -> list[str]:
        return sorted({client.session_hash for client in self._clients})

    @staticmethod
    def _encode(message: dict[str, Any]) -> str:
        return json.dumps(message, separators=(",", ":"))


async def revalidate_forever(
    hub: DashboardHub,
    still_live: Callable[[list[str]], Awaitable[set[str]]],
    *,
    every_s: float,
    purge: Callable[[], Awaitable[int]] | None = None,
) -> None:
    """Close the sockets of sessions that ended elsewhere (expiry, another process's
    logout, an admin revoking the agent); logout in this process closes them at once."""
    while True:
        await asyncio.sleep(every_s)
        try:
            hashes = hub.session_hashes()
            if hashes:
                hub.drop_sessions(set(hashes) - await still_live(hashes))
            if purge is not None:
                await purge()
        except Exception:
            # The database is away (restart, fail-over): keep the sockets, try again.
            log.exception("dashboard session check failed; retrying in %.0f s", every_s)
