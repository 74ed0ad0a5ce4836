"""Session-wide set-up shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresUnavailable, private_postgres
from tests.store_fixtures import POSTGRES_URL_ENV


@pytest.fixture(scope="session", autouse=True)
def postgres_for_store_tests() -> Iterator[None]:
    """Run the store tests on PostgreSQL as well: start a private server unless told one."""
    if os.environ.get(POSTGRES_URL_ENV):
        yield
        return
    try:
        with private_postgres() as url:
            os.environ[POSTGRES_URL_ENV] = url
            try:
                yield
            finally:
                os.environ.pop(POSTGRES_URL_ENV, None)
    except PostgresUnavailable as exc:
        # The PostgreSQL cases then fail (under CI) or skip with this reason.
        print(f"\nPostgreSQL store tests cannot run: {exc}")
        yield
