"""The tests' private PostgreSQL server: web.bench.postgres_server (`switchboard bench
cluster` starts one too, and product code never imports tests)."""

from web.bench.postgres_server import PostgresUnavailable, private_postgres

__all__ = ["PostgresUnavailable", "private_postgres"]
