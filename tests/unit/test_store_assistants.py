"""Assistants in the store (handoff.store.assistants_repo, migrations 0007, 0010 and 0021):
several numbers each and one assistant per number, an engine, disable and remove keeping
the history; an older database's single number, adapter and restricted topics carried
over; the built-in receptionist's one token for every node on the database."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from handoff.assistants import EngineKind
from handoff.store import Removed, Store, create_store_engine, upgrade_to_head
from handoff.store.schema import alembic_config
from web.ai_api.tokens import hash_control_token
from web.assistants import seat_builtin


async def _add(store: Store, name: str, numbers: list[str],
               address: str | None = "127.0.0.1:9") -> int:
    async with store.transaction() as tx:
        assistant = await tx.assistants.create(
            name=name, numbers=numbers, control_token_hash=f"h-{name}",
            engine=EngineKind.AUDIOSOCKET if address else EngineKind.BUILTIN,
            engine_address=address)
    return assistant.id


async def test_an_assistant_answers_several_numbers_and_a_number_has_one_assistant(
    store: Store,
) -> None:
    sales = await _add(store, "sales", ["2100", "_21XX"])
    with pytest.raises(IntegrityError):
        await _add(store, "other", ["2100"])
    async with store.transaction() as tx:
        # Replacing the list keeps a number it had (deleted and added in one go).
        await tx.assistants.set_numbers(sales, ["_21XX", "2199"])
        assert await tx.assistants.numbers_of(sales) == ["_21XX", "2199"]
        owner = await tx.assistants.owner_of("2199")
        assert owner is not None and owner.name == "sales"
        assert await tx.assistants.owner_of("2100") is None


async def test_an_engine_is_built_in_or_has_an_address(store: Store) -> None:
    sales = await _add(store, "sales", ["2100"])
    async with store.transaction() as tx:
        with pytest.raises(ValueError, match="host:port"):
            await tx.assistants.set_engine(sales, EngineKind.AUDIOSOCKET, None)
        with pytest.raises(ValueError, match="host:port"):
            await tx.assistants.set_engine(sales, EngineKind.BUILTIN, "127.0.0.1:9")
        moved = await tx.assistants.set_engine(sales, EngineKind.BUILTIN, None)
    assert moved.engine is EngineKind.BUILTIN and moved.engine_address is None


async def test_a_disabled_assistant_answers_nothing_and_a_removed_one_frees_its_numbers(
    store: Store,
) -> None:
    sales = await _add(store, "sales", ["2100"])
    async with store.transaction() as tx:
        await tx.assistants.disable(sales)
        assert await tx.assistants.answering("sales") is None
        await tx.assistants.enable(sales)
        assert await tx.assistants.answering("sales") is not None
        await tx.assistants.remove(sales)
        call = await tx.calls.create(caller_number="+3310", caller_channel_id="1700.1",
                                     assistant_id=sales)
    async with store.transaction() as tx:
        assert await tx.assistants.listed() == []
        assert await tx.assistants.numbers() == {}
        # The history still names it.
        kept = await tx.assistants.by_name("sales")
        assert kept is not None and (await tx.calls.get(call.id)).assistant_id == kept.id
        with pytest.raises(Removed, match="assistant"):
            await tx.assistants.enable(sales)
    await _add(store, "sales2", ["2100"])  # the number is free again


def _to_0006_with_a_receptionist(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "0006")
    connection.execute(text(
        "INSERT INTO assistants (name, number_pattern, adapter, handoff_level, "
        "restricted_topics, accept_timeout_s, fallback_kind, hold_mode, control_token_hash) "
        "VALUES ('receptionist', '2000', 'builtin', 'balanced', '[]', 45, 'ai_callback', "
        "'ai', 'h'), ('sales', '_21XX', 'audiosocket', 'quick', '[]', 30, 'ai_callback', "
        "'ai', 'h2')"))
    connection.execute(text(
        "INSERT INTO calls (id, assistant_id, caller_number, caller_channel_id, state, "
        "started_at, version) VALUES ('c1', 2, '+3311', '1700.1', 'ended', "
        "'2025-01-01 00:00:00+00:00', 1)"))


async def test_migration_0007_carries_each_number_and_engine_over(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to_0006_with_a_receptionist)
        await upgrade_to_head(engine)
        store = Store(engine)
        async with store.transaction() as tx:
            numbers = await tx.assistants.numbers()
            by_name = {a.name: a for a in await tx.assistants.all()}
        assert numbers == {by_name["receptionist"].id: ["2000"],
                           by_name["sales"].id: ["_21XX"]}
        assert by_name["receptionist"].engine is EngineKind.BUILTIN
        # An external engine from before had no address: it is routed, and says so in
        # `assistant list` until an admin gives it one.
        assert by_name["sales"].engine is EngineKind.AUDIOSOCKET
        assert by_name["receptionist"].accept_timeout_s == 45
        assert all(a.enabled for a in by_name.values())
        # The calls keep pointing at their assistant (no table was copied and dropped).
        async with store.transaction() as tx:
            assert (await tx.calls.get("c1")).assistant_id == by_name["sales"].id
    finally:
        await engine.dispose()


def _to_0009_with_old_topics(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "0009")
    connection.execute(text(
        "INSERT INTO assistants (name, handoff_level, restricted_topics, accept_timeout_s, "
        "fallback_kind, hold_mode, control_token_hash, engine) VALUES "
        "('sales', 'ai_only', :topics, 30, 'ai_callback', 'ai', 'h', 'builtin'), "
        "('desk', 'quick', '[]', 30, 'ai_callback', 'ai', 'h2', 'builtin')"),
        {"topics": '["Billing dispute", "Dossier médical"]'})


async def test_migration_0010_makes_each_old_topic_a_name_with_its_words_as_a_phrase(
    store_url: str,
) -> None:
    engine = create_store_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to_0009_with_old_topics)
        await upgrade_to_head(engine)
        async with Store(engine).transaction() as tx:
            by_name = {a.name: a for a in await tx.assistants.all()}
        # What the admin wrote starts acting as it reads, under a name an engine can send.
        assert by_name["sales"].restricted_topics == [
            {"name": "billing_dispute", "phrases": ["Billing dispute"]},
            {"name": "dossier_medical", "phrases": ["Dossier médical"]}]
        assert by_name["desk"].restricted_topics == []
    finally:
        await engine.dispose()


class _Receptionist:
    """A node's built-in receptionist, as web.assistants.seat_builtin seats it."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    async def serve(self, assistant: str, token: str) -> None:
        self.tokens[assistant] = token

    async def release(self, assistant: str) -> None:
        self.tokens.pop(assistant, None)


async def test_two_nodes_receptionists_serve_a_built_in_assistant_with_one_token(
    store: Store,
) -> None:
    # Two nodes of a cluster on one database: each seats the built-in receptionist, then
    # checks again (as each does every few seconds). Neither's token revokes the other's.
    await _add(store, "receptionist", ["2000"], address=None)
    node_a, node_b = _Receptionist(), _Receptionist()
    assert await seat_builtin(store, node_a)
    assert await seat_builtin(store, node_b)
    assert not await seat_builtin(store, node_a)
    assert node_a.tokens == node_b.tokens
    async with store.transaction() as tx:
        (assistant,) = await tx.assistants.listed()
    assert assistant.control_token_hash == hash_control_token(node_a.tokens["receptionist"])
    # A token rotated for an engine of its own is not kept in the clear.
    async with store.transaction() as tx:
        await tx.assistants.set_control_token_hash(assistant.id, "h-rotated")
        assert (await tx.assistants.get(assistant.id)).builtin_token is None
