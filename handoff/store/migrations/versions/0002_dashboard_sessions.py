"""Dashboard sessions: signed-in browsers, kept server-side so logout and revocation
take effect at once.

Revision ID: 0002
Revises: 0001
Create Date: 2025-03-01

Frozen like 0001: plain column types, no model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_dashboard_sessions"),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"],
            name="fk_dashboard_sessions_agent_id_agents", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_dashboard_sessions_agent_id", "dashboard_sessions", ["agent_id"])
    op.create_index("ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("dashboard_sessions")
