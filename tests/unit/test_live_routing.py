"""Which assistant and engine a new call gets, read from the store for every call (on the
fake ARI): an engine re-pointed while running takes the next call; a number no enabled
assistant answers is refused as unallocated, or goes to routing.unknown_numbers' default
assistant; either way the log names the number."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from handoff.assistants import EngineKind
from handoff.controller import LiveServices, build_controller
from handoff.events import EventHub
from handoff.live import REJECT
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.unit.fake_ari import FakeAri
from tests.unit.test_live_calls import QUICK
from tests.waiting import until

Floor = tuple[FakeAri, LiveServices, Store]


@pytest.fixture
def floor(tmp_path: Path) -> Callable[[str], AbstractAsyncContextManager[Floor]]:
    @asynccontextmanager
    async def build(unknown_numbers: str) -> AsyncIterator[Floor]:
        engine = create_store_engine(f"sqlite:///{tmp_path}/calls.db")
        await upgrade_to_head(engine)
        store, ari = Store(engine), FakeAri()
        async with store.transaction() as tx:
            for name, number, port in (("receptionist", "2000", 9), ("sales", "2100", 10)):
                await tx.assistants.create(
                    name=name, numbers=[number], control_token_hash=name,
                    engine=EngineKind.AUDIOSOCKET, engine_address=f"127.0.0.1:{port}")
        live = build_controller(ari, store, EventHub(), timing=QUICK,
                                unknown_numbers=unknown_numbers)
        try:
            yield ari, live, store
            await ari.idle()
            async with store.transaction() as tx:
                assert not list(await tx.calls.open_calls())
            assert not ari.chans and not ari.bridged, (ari.chans, ari.bridged)
        finally:
            await live.close()
            await ari.close()
            await engine.dispose()

    return build


async def _assistant_of_call(store: Store, caller: str) -> str | None:
    async with store.transaction() as tx:
        names = {a.id: a.name for a in await tx.assistants.all()}
        calls = [c for c in await tx.calls.open_calls() if c.caller_channel_id == caller]
    return names.get(calls[0].assistant_id or 0) if calls else None


async def _hang_up_all(ari: FakeAri, *callers: str) -> None:
    for caller in callers:
        await ari.hang_up_phone(caller)


async def test_an_engine_re_pointed_while_running_takes_the_next_call(
    floor: Callable[[str], AbstractAsyncContextManager[Floor]],
) -> None:
    async with floor(REJECT) as (ari, _live, store):
        first = await ari.caller_dials("sales", dialled="2100")
        await until(lambda: _assistant_of_call(store, first))
        # Its AI leg made (a moment after the call's row names its assistant).
        await until(lambda: len(ari.ai_addresses) == 1)
        async with store.transaction() as tx:
            sales = await tx.assistants.by_name("sales")
            assert sales is not None
            await tx.assistants.set_engine(sales.id, EngineKind.AUDIOSOCKET, "127.0.0.1:11")
        second = await ari.caller_dials("sales", dialled="2100")
        await until(lambda: _assistant_of_call(store, second))
        await until(lambda: len(ari.ai_addresses) == 2)
        # The first call keeps the AI leg it has; the second goes to the new address.
        assert ari.ai_addresses == ["127.0.0.1:10", "127.0.0.1:11"]
        assert first in ari.chans
        await _hang_up_all(ari, first, second)


async def test_an_unknown_number_is_refused_as_unallocated_and_logged(
    floor: Callable[[str], AbstractAsyncContextManager[Floor]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "handoff.live.engines")
    async with floor(REJECT) as (ari, _live, store):
        caller = await ari.caller_dials(None, dialled="2999")
        await until(lambda: ari.hangup_reasons.get(caller) == "unallocated")
        async with store.transaction() as tx:
            assert list(await tx.calls.open_calls()) == []
    assert "call to 2999 refused (no assistant answers it; routing.unknown_numbers = reject)" \
        in caplog.text


async def test_a_disabled_assistants_number_gets_the_default_assistant(
    floor: Callable[[str], AbstractAsyncContextManager[Floor]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "handoff.live.engines")
    async with floor("receptionist") as (ari, _live, store):
        async with store.transaction() as tx:
            sales = await tx.assistants.by_name("sales")
            assert sales is not None
            await tx.assistants.disable(sales.id)
        # Dialled before the PBX re-rendered its dialplan: the controller checks anyway.
        late = await ari.caller_dials("sales", dialled="2100")
        unknown = await ari.caller_dials(None, dialled="2999")
        assert await until(lambda: _assistant_of_call(store, late)) == "receptionist"
        assert await until(lambda: _assistant_of_call(store, unknown)) == "receptionist"
        await _hang_up_all(ari, late, unknown)
    assert "call to 2100 (assistant sales is disabled or removed): routing.unknown_numbers " \
        "sends it to receptionist" in caplog.text
    assert "call to 2999 (no assistant answers it)" in caplog.text


async def test_a_default_assistant_that_is_disabled_means_a_refusal(
    floor: Callable[[str], AbstractAsyncContextManager[Floor]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with floor("receptionist") as (ari, _live, store):
        async with store.transaction() as tx:
            receptionist = await tx.assistants.by_name("receptionist")
            assert receptionist is not None
            await tx.assistants.disable(receptionist.id)
        caller = await ari.caller_dials(None, dialled="2999")
        await until(lambda: ari.hangup_reasons.get(caller) == "unallocated")
    assert "the default assistant 'receptionist' is not enabled" in caplog.text
