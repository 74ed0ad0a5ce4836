"""The benchmark's World in a child process, driven over stdin/stdout (JSON lines).

The child owns the carrier's phones, the RTP probes and the AI engine; the parent owns
the controller being measured. Requests are ``{"id", "op", "args"}``; replies are
``{"id", "result"}`` or ``{"id", "error"}``. Requests run concurrently and their replies
come as each is done (by id): one slow request (a call placed while the carrier is
busy) must not hold up every other caller's, or the rig, not the product, sets the pace
of a many-call run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from pbx.event_link import cancel_and_wait
from web.bench.world import DeskPhones, ToneEngine, World

DESK_OPS = {"open_desk_phones", "close_desk_phones", "desk_heard_caller"}
OPS = {
    "place_call", "set_agent_phone", "first_heard", "first_heard_in_mix", "wait_heard",
    "gap_ms", "agent_heard_caller", "hang_up", "forget", "prepare_agent_phone", "frames",
    "stream_stats", "rig_counts", *DESK_OPS,
}


async def serve(ari_url: str, user: str, password: str) -> None:
    world = World(ari_url, (user, password))
    address = await world.start()
    try:
        await _answer_requests(world, OPS, {"engine": address})
    finally:
        await world.close()


async def serve_desks() -> None:
    """The agents' desk phones alone (a capacity run's): their frames keep time however
    many callers the World's process carries."""
    desks = DeskPhones()
    try:
        await _answer_requests(desks, DESK_OPS, {})  # no engine here: a bare hello
    finally:
        await desks.close_desk_phones()


async def _answer_requests(target: object, ops: set[str], hello: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps(hello), flush=True)
    running: set[asyncio.Task[None]] = set()
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if request["op"] == "quit":
                break
            task = asyncio.create_task(_answer(target, ops, request))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        await asyncio.gather(*running, return_exceptions=True)


async def _answer(target: object, ops: set[str], request: dict[str, Any]) -> None:
    reply: dict[str, Any] = {"id": request["id"]}
    try:
        if request["op"] not in ops:
            raise ValueError(f"unknown op {request['op']!r}")
        reply["result"] = await getattr(target, request["op"])(*request["args"])
    except Exception as exc:  # reported to the parent, which raises it there
        reply["error"] = f"{type(exc).__name__}: {exc}"
    # One write of one line, with no await in it: replies never interleave.
    print(json.dumps(reply), flush=True)


async def serve_engine() -> None:
    """The AI engine alone (a capacity run's: its CPU then counts apart from the phones',
    and neither process has to carry both on one core)."""
    engine = ToneEngine()
    await engine.server.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"engine": engine.address}), flush=True)
    try:
        await reader.read()  # until the parent closes our stdin (or is gone)
    finally:
        await engine.server.close()


class _Child:
    """One child process driven over its stdin/stdout: requests out, replies by id."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._replies = asyncio.create_task(self._read_replies(), name=f"{name} replies")

    async def _read_replies(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                reply = json.loads(line)
                waiting = self._waiting.pop(reply["id"], None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(reply)
        finally:
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(RuntimeError(f"{self.name}: the process ended"))
            self._waiting.clear()

    async def call(self, op: str, *args: Any) -> Any:
        assert self.proc.stdin is not None
        self._next += 1
        reply_to = self._waiting[self._next] = asyncio.get_running_loop().create_future()
        self.proc.stdin.write(
            (json.dumps({"id": self._next, "op": op, "args": args}) + "\n").encode()
        )
        await self.proc.stdin.drain()
        reply = await reply_to
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {op}: {reply['error']}")
        return reply["result"]

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"op": "quit"}\n')
        await self.proc.stdin.drain()
        await _ended(self.proc)
        await cancel_and_wait([self._replies])


async def _ended(proc: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _child(*args: str, ahead: bool) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "web.bench.world_process", *args,
        *(["--ahead"] if ahead else []),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    if ahead:
        # From its first instruction, not once it has imported its modules itself
        # (NumPy and the ARI client: seconds of CPU on a machine this busy).
        ahead_of_the_product(proc.pid)
    return proc


async def _hello(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    return dict(json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)))


class RemoteWorld:
    """The parent's handle on a World running in a child process (and, if asked, the AI
    engine and the agents' desk phones each in one of their own)."""

    def __init__(self, world: _Child, engine_address: str,
                 engine: asyncio.subprocess.Process | None = None,
                 desks: _Child | None = None) -> None:
        self._world = world
        self.pid = world.proc.pid  # its CPU is the rig's, not the controller's
        self.engine_address = engine_address
        self._engine = engine
        self.engine_pid = engine.pid if engine else None
        self._desks = desks
        self.desks_pid = desks.proc.pid if desks else None

    @classmethod
    async def start(cls, ari_url: str, user: str, password: str, *,
                    engine_process: bool = False, desks_process: bool = False,
                    ahead: bool = False) -> RemoteWorld:
        """``engine_process``: the AI engine in a process of its own (its address given
        to the controller), not in the World's; ``desks_process``: the agents' desk
        phones too; ``ahead``: all scheduled ahead of the product
        (:func:`ahead_of_the_product`)."""
        engine = await _child("--engine", ahead=ahead) if engine_process else None
        desks = await _child("--desks", ahead=ahead) if desks_process else None
        proc = await _child(ari_url, user, password, ahead=ahead)
        hello = await _hello(proc)
        if engine is not None:
            hello = await _hello(engine)
        if desks is not None:
            await _hello(desks)
        return cls(_Child(proc, "world"), hello["engine"], engine,
                   _Child(desks, "desk phones") if desks is not None else None)

    async def _call(self, op: str, *args: Any) -> Any:
        return await self._world.call(op, *args)

    async def _desk_call(self, op: str, *args: Any) -> Any:
        return await (self._desks or self._world).call(op, *args)

    async def place_call(self, number: str) -> str:
        return str(await self._call("place_call", number))

    async def set_agent_phone(self, mode: str) -> None:
        await self._call("set_agent_phone", mode)

    async def first_heard(self, caller: str, who: str, after: float) -> float | None:
        result = await self._call("first_heard", caller, who, after)
        return None if result is None else float(result)

    async def first_heard_in_mix(self, caller: str, who: str, after: float) -> float | None:
        result = await self._call("first_heard_in_mix", caller, who, after)
        return None if result is None else float(result)

    async def wait_heard(self, caller: str, who: str, after: float, within: float
                         ) -> float | None:
        result = await self._call("wait_heard", caller, who, after, within)
        return None if result is None else float(result)

    async def gap_ms(self, caller: str, start: float, end: float) -> float:
        return float(await self._call("gap_ms", caller, start, end))

    async def agent_heard_caller(self) -> bool:
        return bool(await self._call("agent_heard_caller"))

    async def frames(self, caller: str, start: float, end: float) -> list[tuple[float, str]]:
        return [(float(at), str(who)) for at, who in await self._call("frames", caller, start, end)]

    async def stream_stats(self, caller: str, start: float, end: float) -> dict[str, Any]:
        return dict(await self._call("stream_stats", caller, start, end))

    async def rig_counts(self, callers: list[str]) -> dict[str, dict[str, float]]:
        return dict(await self._call("rig_counts", callers))

    async def hang_up(self, caller: str) -> None:
        await self._call("hang_up", caller)

    async def open_desk_phones(self, host: str, port: int, users: list[list[str]]) -> None:
        await self._desk_call("open_desk_phones", host, port, users)

    async def close_desk_phones(self) -> None:
        await self._desk_call("close_desk_phones")

    async def desk_heard_caller(self, user: str, after: float) -> float | None:
        result = await self._desk_call("desk_heard_caller", user, after)
        return None if result is None else float(result)

    async def forget(self, caller: str) -> None:
        await self._call("forget", caller)

    async def prepare_agent_phone(self) -> None:
        await self._call("prepare_agent_phone")

    async def close(self) -> None:
        for child in (self._world, self._desks):
            if child is not None:
                await child.close()
        if self._engine is not None:
            assert self._engine.stdin is not None
            self._engine.stdin.close()
            await _ended(self._engine)


RIG_NICE = -10


def ahead_of_the_product(pid: int = 0) -> None:
    """A capacity run's rig processes (``pid``, 0: this one) are scheduled ahead of
    everything else (given the right): on a busy machine a phone's process that waits its
    turn lets the kernel drop its RTP (a full socket buffer), and that loss would be
    counted as the product's."""
    with contextlib.suppress(PermissionError, ProcessLookupError):
        os.setpriority(os.PRIO_PROCESS, pid, RIG_NICE)


if __name__ == "__main__":
    if "--ahead" in sys.argv:
        sys.argv.remove("--ahead")
        ahead_of_the_product()
    if sys.argv[1] == "--engine":
        asyncio.run(serve_engine())
    elif sys.argv[1] == "--desks":
        asyncio.run(serve_desks())
    else:
        asyncio.run(serve(*sys.argv[1:4]))
