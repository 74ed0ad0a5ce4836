"""Building the database engine from a URL (the composition root calls this once)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

# Asynchronous drivers for the plain URLs an admin writes in the configuration.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
}

# How long an SQLite writer waits for another writer (another controller process, the
# web process) before failing. Writes here are single rows and take microseconds, so a
# wait this long only happens when something is badly stuck.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# How soon PostgreSQL drops the connection of a client whose host died: a cluster node
# lost mid-transaction sends no FIN, and the rows its transaction locked (its lease, its
# calls) would stay locked until the server's TCP gave up on it (two hours idle, or some
# 15 minutes of retransmissions when its last answer went unacknowledged), so no
# survivor could end that node's calls. Probes and acknowledgements come from a live
# host's kernel, however busy its controller is: only a dead host is dropped, within
# about 5 s (2 s idle, then 3 probes 1 s apart; or 5 s of data unacknowledged).
PG_DEAD_CLIENT = {"tcp_keepalives_idle": 2, "tcp_keepalives_interval": 1,
                  "tcp_keepalives_count": 3, "tcp_user_timeout": 5000}


def async_url(url: str | URL) -> URL:
    """The URL with an asyncio driver: `sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed if driver is None else parsed.set(drivername=driver)


def libpq_url(url: str | URL) -> str:
    """The PostgreSQL URL as libpq (psycopg's own connect) takes it, password included:
    `postgresql+psycopg://u:p@h/db` -> `postgresql://u:p@h/db`."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_store_engine(url: str | URL, *, echo: bool = False) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite) or PostgreSQL (psycopg 3).

    The caller owns it and must `await engine.dispose()` on shutdown.
    """
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        engine = create_async_engine(target, echo=echo)
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        return engine
    # pre_ping: after a PostgreSQL fail-over the pool's old connections are dead; find
    # out before handing one to a call in progress rather than failing that call.
    engine = create_async_engine(target, echo=echo, pool_pre_ping=True)
    event.listen(engine.sync_engine, "connect", _configure_postgres_connection)
    return engine


def _configure_postgres_connection(dbapi_connection: Any,
                                   _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # The server's side of this connection (ignored on a Unix socket).
        for name, value in PG_DEAD_CLIENT.items():
            cursor.execute(f"SET {name} = {value}")
    finally:
        cursor.close()
    # Not left in a transaction of its own (psycopg opens one for the SETs).
    dbapi_connection.commit()


def _configure_sqlite_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the dashboard read history while the controller writes call events.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite ignores foreign keys unless asked, per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()
