"""Database fixtures shared by the store tests: every test gets a fresh database built by
the Alembic migrations (never `create_all`), on SQLite and on PostgreSQL.

PostgreSQL is the session's server (tests/conftest.py: SWITCHBOARD_TEST_POSTGRES_URL, or
a private server it starts), on a database the test role may create schemas in; each
test gets its own schema, dropped afterwards. Without a server the PostgreSQL cases
fail with the reason: the production store must pass the same tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.store import Store, create_store_engine, upgrade_to_head

POSTGRES_URL_ENV = "SWITCHBOARD_TEST_POSTGRES_URL"


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: datetime = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    """The URL of an empty database, as an admin would write it in the configuration."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/switchboard.db"
        return
    base = str(request.getfixturevalue("postgres_url"))
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_store_engine(base)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_store_engine(store_url)
    await upgrade_to_head(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(engine: AsyncEngine, clock: FakeClock) -> Store:
    return Store(engine, clock)
