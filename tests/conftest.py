"""Session-wide set-up shared by every test folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresUnavailable, private_postgres
from tests.store_fixtures import POSTGRES_URL_ENV


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL server the store tests also run on: SWITCHBOARD_TEST_POSTGRES_URL if
    set, else a private server started on first use and stopped after the session.

    Without one the PostgreSQL cases fail, saying why, in every run (a developer's as
    well as CI's): the production store must pass the same tests, and a skip would hide
    that it was not tried.
    """
    given = os.environ.get(POSTGRES_URL_ENV)
    if given:
        yield given
        return
    with contextlib.ExitStack() as server:
        try:
            url = server.enter_context(private_postgres())
        except PostgresUnavailable as exc:
            raise pytest.fail.Exception(f"the PostgreSQL store tests cannot run: {exc}",
                                        pytrace=False) from None
        yield url
