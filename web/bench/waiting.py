"""Waiting for what happens elsewhere (Asterisk, a browser, a background task): a
condition polled until it holds, with a deadline. Tests and benchmarks wait this way,
never with a fixed sleep, which is too short on a loaded machine and wasted time on an
idle one."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def until(
    check: Callable[[], Awaitable[T | None]], within: float = ..., *, step: float = ...,
    why: str | Callable[[], str] = ...,
) -> T: ...


@overload
async def until(
    check: Callable[[], T | None], within: float = ..., *, step: float = ...,
    why: str | Callable[[], str] = ...,
) -> T: ...


async def until(
    check: Callable[[], object], within: float = 20.0, *, step: float = 0.02,
    why: str | Callable[[], str] = "condition not met",
) -> object:
    """Return `check`'s first truthy answer (awaited when it is a coroutine), asking every
    `step` seconds; fail the test with `why` (a text or what to say then) after `within`
    seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            reason = why() if callable(why) else why
            raise AssertionError(f"{reason} within {within:g} s")
        await asyncio.sleep(step)
