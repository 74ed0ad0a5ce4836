"""Addresses the PBX refuses for a while after failing authentication too often.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Additive only, frozen like 0001: plain column types, no model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sip_blocks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_sip_blocks_address", "sip_blocks", ["address"])


def downgrade() -> None:
    op.drop_index("ix_sip_blocks_address", "sip_blocks")
    op.drop_table("sip_blocks")
