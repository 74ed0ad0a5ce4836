"""Pause reasons and dispositions: the admin's lists (each pause reason productive or
not), the reason an agent away chose and since when their presence holds, each call's
disposition and whether a queue requires one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

Agents there now have no reason and no start for their presence (the board shows no
duration until it next changes); calls there have no disposition and queues require
none. Frozen like 0001: plain column types, no model imports;
plain ALTER TABLE, never batch mode (see 0007).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _add_reference(table: str, column: str, target: str) -> None:
    """SQLite adds a column's foreign key only inline, in the ALTER TABLE itself (0012)."""
    name = f"fk_{table}_{column}_{target}"
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER "
                   f"CONSTRAINT {name} REFERENCES {target} (id)")
        return
    op.add_column(table, sa.Column(column, sa.Integer(), nullable=True))
    op.create_foreign_key(name, table, target, [column], ["id"])


def upgrade() -> None:
    op.create_table(
        "pause_reasons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("productive", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pause_reasons"),
        sa.UniqueConstraint("name", name="uq_pause_reasons_name"),
    )
    op.add_column("agents", sa.Column("presence_since", sa.DateTime(timezone=True),
                                      nullable=True))
    _add_reference("agents", "pause_reason_id", "pause_reasons")
    op.create_table(
        "dispositions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dispositions"),
        sa.UniqueConstraint("name", name="uq_dispositions_name"),
    )
    _add_reference("calls", "disposition_id", "dispositions")
    op.add_column("queues", sa.Column("disposition_required", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("queues", "disposition_required")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("fk_calls_disposition_id_dispositions", "calls",
                           type_="foreignkey")
        op.drop_constraint("fk_agents_pause_reason_id_pause_reasons", "agents",
                           type_="foreignkey")
    op.execute("ALTER TABLE calls DROP COLUMN disposition_id")
    op.drop_table("dispositions")
    op.execute("ALTER TABLE agents DROP COLUMN pause_reason_id")
    op.execute("ALTER TABLE agents DROP COLUMN presence_since")
    op.drop_table("pause_reasons")
