"""Alembic environment for the Switchboard store.

Migrations run from code: `handoff.store.upgrade_to_head(engine)` hands Alembic an open
connection through `config.attributes["connection"]`, so the controller migrates with
the same engine it serves calls with and no alembic.ini is needed at run time.
For writing a new revision, `alembic -c handoff/store/alembic.ini -x url=... revision
--autogenerate -m "..."` builds a short-lived engine from the URL instead.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from handoff.store.engine import create_store_engine
from handoff.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_store_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (SQL script) migrations are not supported")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise RuntimeError("pass the database URL: alembic -x url=sqlite:///path/to.db ...")
    asyncio.run(_run_from_url(url))


main()
