"""Call-backs are calls: a call's direction (inbound to an assistant, or an agent's
call-back going out over the trunk).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Additive only, frozen like 0001: plain column types, no model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("direction", sa.String(32), nullable=False,
                                     server_default="inbound"))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("direction")
