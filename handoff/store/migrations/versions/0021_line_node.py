"""Which cluster node holds an agent's desk phone's open line (agents.line_node), so a
survivor calls the phone again when that node is lost.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

Additive only, frozen like 0001: plain column types, no model imports. Nobody's line is
recorded until it is opened again (NULL).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("line_node", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("line_node")
