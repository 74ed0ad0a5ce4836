"""Trunks managed from the admin page and the CLI (the settings file's stay there).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

One row per trunk to a carrier: how the carrier knows us (by address, or a registration
with a digest account), the caller ID and codecs of our calls out, and the numbers
allowed out through it. The password is kept readable, as an agent's SIP password is:
Asterisk needs it to answer the carrier's challenges, and the rendered pjsip.conf
(mode 0600) is the only other place it goes. Frozen like 0001: plain column types, no
model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("auth", sa.String(32), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password", sa.String(128), nullable=False),
        sa.Column("caller_id", sa.String(64), nullable=False),
        sa.Column("codecs", sa.JSON(), nullable=False),
        sa.Column("patterns", sa.JSON(), nullable=False),
        sa.Column("allow_international", sa.Boolean(), nullable=False),
        sa.Column("allow_premium", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trunks"),
        sa.UniqueConstraint("name", name="uq_trunks_name"),
    )


def downgrade() -> None:
    op.drop_table("trunks")
