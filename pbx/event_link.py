"""The event link shared by the ARI and AMI clients.

One connection to Asterisk delivers events; this module holds what keeps it up and
what hands its events on, whatever the protocol:

- :class:`OrderedDispatcher`: the dispatch table, with per-key ordering (a call leg's
  events in arrival order), bounded queues and isolated handlers;
- :class:`LinkSupervisor`: the link's status, readiness, backoff and outage logging;
- :class:`SupervisedClient`: the base of :class:`pbx.ari.AriClient` and
  :class:`pbx.ami.AmiClient`: the ``on_connect``/``on_disconnect`` hooks, the counters and
  the one supervised reconnect loop (a session, then down, on_disconnect, backoff);
- :class:`LinkSettings`: the timeouts, backoff and queue bounds both clients take, each
  with its own defaults;
- :func:`cancel_and_wait`, and the handler, hook and status types.

Log lines go to the logger each client passes in (``pbx.ari.client``, ``pbx.ami``), so an
operator filters by protocol, not by this module.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Self, TypedDict, TypeVar, Unpack

log = logging.getLogger(__name__)

E = TypeVar("E")
Handler = Callable[[E], Awaitable[None]]
Status = Literal["connected", "degraded", "closed"]

ConnectHook = Callable[[], Awaitable[None]]
DisconnectHook = Callable[[str], Awaitable[None]]

ANY_EVENT = "*"
"""Dispatch-table key of handlers that see every event (logging, metrics, ledgers)."""


@dataclass
class EventStats:
    """Counters an operator looks at when calls misbehave; exported as metrics."""

    delivered: int = 0
    errors: int = 0
    """Handler exceptions (and failed connect hooks); each one is logged."""
    delayed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Events, by type, that waited longer than the handler budget before their handlers
    started, or whose handlers ran longer than it; each one is logged."""
    bad_frames: int = 0
    """Frames that were not an event (ARI: not a JSON event object; AMI: a block without
    an Event or Response header, or with lines that are not headers); each is logged."""
    unknown_events: int = 0
    """Events of a type the protocol does not define (ARI), passed on all the same: a
    newer Asterisk's, or garbage that happens to be JSON."""
    connects: int = 0


@dataclass(frozen=True)
class LinkSettings:
    """How a client keeps its event link up and hands its events on.

    Each client has its own defaults (``ARI_LINK``, ``AMI_LINK``) and takes any of these
    as keyword arguments of its constructor (:class:`ClientOptions`).
    """

    connect_timeout: float = 5.0
    ping_interval: float = 5.0
    pong_timeout: float = 5.0
    """A ping unanswered this long means Asterisk, or the network to it, is dead."""
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    handler_budget: float = 0.25
    """How long an event may wait for its turn, and how long its handlers may run, before
    it counts as delayed (and is logged): past a quarter of a second a person notices, a
    caller's key answered late or a card still ringing after its caller hung up. A
    handler that runs longer holds up the later events of its key (its call)."""
    queue_size: int = 1000
    """Events queued per key (a channel) before the client stops reading its link."""

    def but(self, options: LinkOptions) -> LinkSettings:
        """These settings with the ones a caller gave instead."""
        return dataclasses.replace(self, **options)


class LinkOptions(TypedDict, total=False):
    """:class:`LinkSettings` given by name."""

    connect_timeout: float
    ping_interval: float
    pong_timeout: float
    backoff_initial: float
    backoff_max: float
    handler_budget: float
    queue_size: int


class ClientOptions(LinkOptions, total=False):
    """What the constructors of the ARI and AMI clients take by name besides their own:
    the link's hooks (see :class:`SupervisedClient`) and any of its settings."""

    on_connect: ConnectHook | None
    on_disconnect: DisconnectHook | None


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait until they have finished, retrieving their outcome."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r while cancelled", task.get_name(), task.exception())


class _Lane(Generic[E]):
    """The queue and worker of one key (one channel, usually)."""

    __slots__ = ("pending", "queue", "task")

    def __init__(self, size: int) -> None:
        # Each event with its kinds and the loop time it arrived at (its wait is measured).
        self.queue: asyncio.Queue[tuple[E, tuple[str, ...], float]] = asyncio.Queue(size)
        self.pending = 0  # submitters waiting for room in a full queue
        self.task: asyncio.Task[None] | None = None


class OrderedDispatcher(Generic[E]):
    """Dispatch table with per-key ordering, bounded queues and isolated handlers.

    Why per key: a channel's events must be applied in the order Asterisk sent them
    (a ChannelHangupRequest handled before the StasisStart of the same leg would leave
    a ghost call), while one slow call must not hold up every other caller.

    Why bounded and blocking rather than dropping: a lost StasisEnd or
    ChannelDestroyed leaves a call open forever. When a key's queue is full the
    submitter waits, which stops reading the socket; that shows up in the logs.

    Why a budget: an event is counted as delayed (``EventStats.delayed``, by type) and
    logged with its key when it waited longer than ``budget`` behind the earlier events
    of its key, or when its handlers ran longer than that. ``label`` names a key in that
    line (the controller turns a caller's channel into ``call=<id>``).
    """

    def __init__(
        self,
        name: str,
        *,
        stats: EventStats,
        describe: Callable[[E], str],
        queue_size: int = 1000,
        budget: float = 0.2,
        logger: logging.Logger = log,
    ) -> None:
        self._name = name
        self._stats = stats
        self._describe = describe
        self._queue_size = queue_size
        self.budget = budget
        self._log = logger
        self._table: dict[str, list[Handler[E]]] = {}
        self._lanes: dict[str, _Lane[E]] = {}
        self.label: Callable[[str], str] = _key_text
        self.backpressured = False
        """True while a submitter waits for room: readers must not take silence for death."""

    def add(self, kind: str, handler: Handler[E]) -> None:
        self._table.setdefault(kind, []).append(handler)

    def remove(self, kind: str, handler: Handler[E]) -> None:
        handlers = self._table.get(kind, [])
        if handler in handlers:
            handlers.remove(handler)

    def _handlers(self, kinds: Sequence[str]) -> list[Handler[E]]:
        return [h for kind in (*kinds, ANY_EVENT) for h in self._table.get(kind, ())]

    @property
    def busy_keys(self) -> int:
        return len(self._lanes)

    async def submit(self, event: E, kinds: Sequence[str], key: str) -> None:
        """Queue ``event`` behind earlier events of ``key``; waits if that queue is full."""
        if not self._handlers(kinds):
            return
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(self._queue_size)
            lane.task = asyncio.create_task(self._drain(key, lane), name=f"{self._name}:{key}")
        if lane.queue.full():
            self.backpressured = True
            self._log.warning(
                "%s: %d events queued for %s; reading paused until its handlers catch up",
                self._name,
                lane.queue.qsize(),
                key,
            )
        lane.pending += 1
        try:
            await lane.queue.put((event, tuple(kinds), asyncio.get_running_loop().time()))
        finally:
            lane.pending -= 1
            self.backpressured = False

    async def _drain(self, key: str, lane: _Lane[E]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while lane.pending or not lane.queue.empty():
                event, kinds, arrived = await lane.queue.get()
                # Named before the handlers run: the call a StasisEnd ends is gone after.
                label = self.label(key)
                started = loop.time()
                slowest: tuple[float, Handler[E] | None] = (0.0, None)
                for handler in self._handlers(kinds):
                    ran = await self._run(handler, event, key)
                    if ran > slowest[0]:
                        slowest = (ran, handler)
                self._check_budget(event, kinds[0], label, started - arrived, slowest)
        finally:
            # No await between the emptiness check and this: a later event for the same
            # key finds no lane and starts a fresh worker, so nothing is stranded.
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _run(self, handler: Handler[E], event: E, key: str) -> float:
        """Run one handler, isolated; returns how long it ran."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await handler(event)
        except Exception:
            self._stats.errors += 1
            self._log.exception(
                "%s: handler %s failed on %s (key %s); later events still flow",
                self._name,
                _callable_name(handler),
                self._describe(event),
                key,
            )
        else:
            self._stats.delivered += 1
        return loop.time() - started

    def _check_budget(self, event: E, kind: str, label: str, waited: float,
                      slowest: tuple[float, Handler[E] | None]) -> None:
        ran, handler = slowest
        if waited <= self.budget and ran <= self.budget:
            return
        self._stats.delayed[kind] += 1
        self._log.warning(
            "%s: %s (%s) delayed: waited %.0f ms for its turn, handler %s ran %.0f ms; "
            "over the %.0f ms budget",
            self._name,
            self._describe(event),
            label,
            waited * 1000,
            "-" if handler is None else _callable_name(handler),
            ran * 1000,
            self.budget * 1000,
        )

    async def close(self) -> None:
        lanes = list(self._lanes.values())
        self._lanes.clear()
        await cancel_and_wait(lane.task for lane in lanes if lane.task is not None)


def _key_text(key: str) -> str:
    return f"key {key}"


def _callable_name(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", None) or repr(func))


class LinkSupervisor:
    """Status, readiness, backoff and outage logging of one connection to Asterisk.

    The outage is logged once when it starts and once when it ends (with its length
    and the number of attempts), so a long Asterisk restart does not flood the log.
    """

    def __init__(self, what: str, settings: LinkSettings, logger: logging.Logger = log) -> None:
        self.what = what
        self.status: Status = "degraded"
        self.ready = asyncio.Event()
        self._backoff_initial = settings.backoff_initial
        self._backoff_max = settings.backoff_max
        self._delay = settings.backoff_initial
        self._log = logger
        self._ever_up = False
        self._outage_since: float | None = None
        self._attempts = 0

    def up(self) -> None:
        self.status = "connected"
        self._delay = self._backoff_initial
        if self._outage_since is not None:
            lasted = asyncio.get_running_loop().time() - self._outage_since
            self._log.warning(
                "%s restored after %.1f s and %d failed attempts",
                self.what,
                lasted,
                self._attempts,
            )
        elif not self._ever_up:
            self._log.info("%s connected", self.what)
        self._ever_up = True
        self._outage_since = None
        self._attempts = 0
        self.ready.set()

    def down(self, reason: str) -> None:
        self.ready.clear()
        if self.status == "closed":
            return
        self.status = "degraded"
        self._attempts += 1
        if self._outage_since is None:
            self._outage_since = asyncio.get_running_loop().time()
            self._log.warning(
                "%s %s: %s; retrying with backoff up to %.1f s",
                self.what,
                "lost" if self._ever_up else "unavailable",
                reason,
                self._backoff_max,
            )
        else:
            self._log.debug("%s still down (attempt %d): %s", self.what, self._attempts, reason)

    async def backoff(self) -> None:
        # Jitter spreads the reconnects of several controllers after an Asterisk restart.
        await asyncio.sleep(self._delay * random.uniform(0.5, 1.0))
        self._delay = min(self._delay * 2, self._backoff_max)

    def close(self) -> None:
        self.status = "closed"
        self.ready.clear()


class SupervisedClient(ABC, Generic[E]):
    """An Asterisk client whose event link one supervised loop keeps up (ARI and AMI).

    A subclass says how one session runs (:meth:`_session_once`: connect, log in, run
    :meth:`_run_connect_hook`, call :meth:`_link_up`, then pass events on until the link
    ends); this class reconnects after it, however it ended.
    """

    def __init__(
        self,
        label: str,
        what: str,
        *,
        session: str,
        key: Callable[[E], str],
        describe: Callable[[E], str],
        defaults: LinkSettings,
        logger: logging.Logger,
        **options: Unpack[ClientOptions],
    ) -> None:
        """``label`` ("ARI") starts log lines, ``what`` names the link in outage lines,
        ``session`` names one session in the line of an unexpected failure; ``options``
        are what the client's own caller gave (hooks, and settings over ``defaults``)."""
        self.on_connect = options.pop("on_connect", None)
        """Runs after every (re)connect, before ready: reconcile with Asterisk here (events
        sent while nobody listened are lost)."""
        self.on_disconnect = options.pop("on_disconnect", None)
        """Runs when an established link is lost, with the reason."""
        settings = defaults.but(options)  # the hooks taken out, settings are left
        self._label = label
        self._session_name = session
        self._key = key
        self._log = logger
        self.stats = EventStats()
        self._settings = settings
        self._dispatcher: OrderedDispatcher[E] = OrderedDispatcher(
            f"{label} events",
            stats=self.stats,
            describe=describe,
            queue_size=settings.queue_size,
            budget=settings.handler_budget,
            logger=logger,
        )
        self._link = LinkSupervisor(what, settings, logger)
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    def label_keys(self, label: Callable[[str], str]) -> None:
        """Name the events' ordering keys by ``label`` in the log lines of delayed events
        (the controller names the call a caller's channel key belongs to)."""
        self._dispatcher.label = label

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def start(self) -> None: ...

    async def close(self) -> None:
        """Stop at once, even in the middle of a backoff; every task is awaited."""
        if self._closed:
            return
        self._closed = True
        self._link.close()
        await cancel_and_wait(self._tasks())
        await self._dispatcher.close()
        await self._release()

    def _tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks :meth:`close` ends before the dispatcher: the supervisor, and any a
        subclass adds."""
        return [self._supervisor] if self._supervisor is not None else []

    async def _release(self) -> None:
        """What a client holds besides its tasks, released last by :meth:`close`."""

    @property
    def status(self) -> Status:
        """``connected`` when events flow and on_connect has run; ``degraded`` otherwise."""
        return self._link.status

    @abstractmethod
    async def _session_once(self) -> str:
        """One connection's life; returns why it ended."""

    async def _supervise(self) -> None:
        while True:
            try:
                reason = await self._session_once()
            except Exception as exc:
                # A bug here must not end the supervision: log it and reconnect.
                self._log.exception("%s failed unexpectedly", self._session_name)
                reason = f"internal error: {exc!r}"
            # Only a session that got up (on_connect done) loses anything worth telling
            # the owner about; a failed attempt during an outage does not.
            was_up = self._link.status == "connected"
            self._link.down(reason)
            if was_up and self.on_disconnect is not None:
                try:
                    await self.on_disconnect(reason)
                except Exception:
                    self.stats.errors += 1
                    self._log.exception("%s on_disconnect hook failed", self._label)
            await self._link.backoff()

    async def _run_connect_hook(self) -> str | None:
        """None if the hook ran (or there is none); else why the session is abandoned."""
        if self.on_connect is None:
            return None
        try:
            await self.on_connect()
        except Exception as exc:
            self.stats.errors += 1
            self._log.exception("%s on_connect hook failed; reconnecting to retry it", self._label)
            return f"on_connect hook failed: {exc!r}"
        return None

    def _link_up(self) -> None:
        """The session is up and reconciled: count it and let ``wait_ready`` return."""
        self.stats.connects += 1
        self._link.up()


__all__ = [
    "ANY_EVENT",
    "ClientOptions",
    "ConnectHook",
    "DisconnectHook",
    "EventStats",
    "Handler",
    "LinkOptions",
    "LinkSettings",
    "LinkSupervisor",
    "OrderedDispatcher",
    "Status",
    "SupervisedClient",
    "cancel_and_wait",
]
