"""Bringing a database to the current schema with the Alembic migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Any fixed number: PostgreSQL advisory lock key held while migrating, so two
# Switchboard processes starting together do not both try to create the tables.
_MIGRATION_LOCK_KEY = 0x5B0A4D


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every migration not yet applied; a no-op on an up-to-date database."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Held until this transaction commits; PostgreSQL DDL is transactional.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        await connection.run_sync(_upgrade)


async def schema_is_current(engine: AsyncEngine) -> bool:
    """True when the database is at the newest migration (for the status endpoint)."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_heads)
    head = ScriptDirectory.from_config(alembic_config()).get_heads()
    return set(current) == set(head)


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_heads(connection: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(connection).get_current_heads()


def migrations() -> tuple[str, ...]:
    """Every migration's revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return tuple(reversed([r.revision for r in script.walk_revisions()]))


async def pending_migrations(engine: AsyncEngine) -> tuple[str, ...] | None:
    """The migrations ``upgrade_to_head`` would apply, oldest first (every one on a
    database without tables yet); None when the database is at a revision these
    migrations do not know, written by a newer Switchboard. Reads only."""
    async with engine.connect() as connection:
        current = set(await connection.run_sync(_current_heads))
    known = migrations()
    if not current <= set(known):
        return None
    applied = max((known.index(r) + 1 for r in current), default=0)
    return known[applied:]
