"""Pause reasons: the admin's list (each productive or not), the reason an agent away
chose and since when their presence holds.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

Agents there now have no reason and no start for their presence (the board shows no
duration until it next changes). Frozen like 0001: plain column types, no model imports;
plain ALTER TABLE, never batch mode (see 0007).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


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
    # SQLite adds a column's foreign key only inline, in the ALTER TABLE itself (0012).
    name = "fk_agents_pause_reason_id_pause_reasons"
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE agents ADD COLUMN pause_reason_id INTEGER "
                   f"CONSTRAINT {name} REFERENCES pause_reasons (id)")
    else:
        op.add_column("agents", sa.Column("pause_reason_id", sa.Integer(), nullable=True))
        op.create_foreign_key(name, "agents", "pause_reasons", ["pause_reason_id"], ["id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("fk_agents_pause_reason_id_pause_reasons", "agents",
                           type_="foreignkey")
    op.execute("ALTER TABLE agents DROP COLUMN pause_reason_id")
    op.execute("ALTER TABLE agents DROP COLUMN presence_since")
    op.drop_table("pause_reasons")
