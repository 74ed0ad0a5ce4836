"""People can be disabled and removed without losing their history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

A disabled person cannot sign in, is offered no card, and has no SIP endpoint; a
removed one is also gone from every list. The row stays in both cases: calls, handoffs,
notes and audit lines keep pointing at it. Additive only, frozen like 0001: plain column
types, no model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("agents", sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("removed_at")
        batch.drop_column("disabled_at")
