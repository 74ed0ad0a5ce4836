"""After the call: a contact's follow-up flag and when (and by whom) its conversation
was resolved; an index for "every call of this number".

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-15

Additive only, frozen like 0001: plain column types, no model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contacts", sa.Column("follow_up", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.add_column("contacts", sa.Column("resolved_at", sa.DateTime(timezone=True),
                                        nullable=True))
    op.add_column("contacts", sa.Column("resolved_by", sa.Integer(), nullable=True))
    op.create_index("ix_calls_caller_number", "calls", ["caller_number"])


def downgrade() -> None:
    op.drop_index("ix_calls_caller_number", table_name="calls")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("resolved_by")
        batch.drop_column("resolved_at")
        batch.drop_column("follow_up")
