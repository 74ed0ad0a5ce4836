"""Who takes calls: a supervisor or an admin may take calls as well, or not at all (no
duty switch, no presence on their desk).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Additive only, frozen like 0001: plain column types, no model imports. Everyone there is
keeps taking calls, as before this column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("takes_calls", sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("takes_calls")
