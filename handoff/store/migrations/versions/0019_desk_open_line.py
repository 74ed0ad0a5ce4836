"""Whether an agent's SIP desk phone keeps an open line on duty (it auto-answers the
PBX's call on a Call-Info answer-after=0 header).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

Additive only, frozen like 0001: plain column types, no model imports. Everyone there
keeps today's ringing path (false), as before this column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("open_line", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("open_line")
