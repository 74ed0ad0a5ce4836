"""The built-in receptionist's token for an assistant on the built-in engine, kept so
that every node of a cluster on this database serves it with the same token.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

Additive only, frozen like 0001: plain column types, no model imports. Empty for every
assistant until a receptionist seats it (a fresh token then, as at every start before).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("assistants", sa.Column("builtin_token", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assistants") as batch:
        batch.drop_column("builtin_token")
