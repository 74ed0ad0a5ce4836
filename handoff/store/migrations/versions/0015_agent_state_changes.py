"""Agent state changes: one row each time an agent's presence changes (and with it
their pause reason), so the figures can tell how long people spent in wrap-up and in
each pause.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

The same table as the policy branch's 0015 (agent_state_changes there, with its queue
and call columns): the lead keeps that one. The history starts
empty: an agent's time before this migration is not counted. Frozen like 0001: plain
column types, no model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_state_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        # available, away, wrap_up or off_duty (handoff.agents.AgentState)
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("pause_reason_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_state_changes"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE",
                                name="fk_agent_state_changes_agent_id_agents"),
        sa.ForeignKeyConstraint(["pause_reason_id"], ["pause_reasons.id"],
                                name="fk_agent_state_changes_pause_reason_id_pause_reasons"),
    )
    op.create_index("ix_agent_state_changes_agent_at", "agent_state_changes",
                    ["agent_id", "at"])
    op.create_index("ix_agent_state_changes_at", "agent_state_changes", ["at"])


def downgrade() -> None:
    op.drop_index("ix_agent_state_changes_at", table_name="agent_state_changes")
    op.drop_index("ix_agent_state_changes_agent_at", table_name="agent_state_changes")
    op.drop_table("agent_state_changes")
