"""Persistent state: SQLAlchemy models, Alembic migrations, repositories.

The composition root builds one engine with `create_store_engine(url)`, runs
`await upgrade_to_head(engine)`, then wraps it in `Store(engine)`; everything else
works through `async with store.transaction() as tx: ...`.
"""

from handoff.store.calls_repo import CallLegs
from handoff.store.engine import create_store_engine, libpq_url
from handoff.store.errors import (
    AgentBusy,
    AlreadyTaken,
    ConcurrentUpdate,
    LastAdmin,
    NotFound,
    NotOfferable,
    OffDuty,
    Removed,
    StoreError,
)
from handoff.store.schema import migrations, pending_migrations, schema_is_current, upgrade_to_head
from handoff.store.transaction import Store, Transaction

__all__ = [
    "AgentBusy",
    "AlreadyTaken",
    "CallLegs",
    "ConcurrentUpdate",
    "LastAdmin",
    "NotFound",
    "NotOfferable",
    "OffDuty",
    "Removed",
    "Store",
    "StoreError",
    "Transaction",
    "create_store_engine",
    "libpq_url",
    "migrations",
    "pending_migrations",
    "schema_is_current",
    "upgrade_to_head",
]
