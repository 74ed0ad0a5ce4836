"""Nodes of a cluster: each controller's lease (table nodes), and the node that holds
each call (calls.node).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

Additive only. Calls there have no node: a single box reconciles every open call, as
before. Frozen like 0001: plain column types, no model imports; plain ALTER TABLE,
never batch mode (see 0007).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("node", sa.String(64), nullable=True))
    op.create_index("ix_calls_node", "calls", ["node"])
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_to", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_nodes"),
    )


def downgrade() -> None:
    op.drop_table("nodes")
    op.drop_index("ix_calls_node", table_name="calls")
    op.drop_column("calls", "node")
