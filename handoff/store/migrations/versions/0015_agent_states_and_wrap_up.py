"""Every agent state change as a row (agent_state_changes: who, when, the state entered
and the pause reason with it), a queue's own wrap-up time limit, and when a caller began
leaving a voicemail.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

The floor's figures (time away per reason, productive or not, time in wrap-up) read
agent_state_changes: a state lasts from its row to the agent's next one. Agents there
now have no row until their next change. Queues there have no limit of their own (the
desk.wrap_up_s setting applies, as before); calls there have no voicemail. Additive
only, frozen like 0001: plain column types, no model imports; plain ALTER TABLE for
the foreign key on SQLite (see 0013).
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
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE",
                                name="fk_agent_state_changes_agent_id_agents"),
        sa.ForeignKeyConstraint(["pause_reason_id"], ["pause_reasons.id"],
                                name="fk_agent_state_changes_pause_reason_id_pause_reasons"),
        sa.PrimaryKeyConstraint("id", name="pk_agent_state_changes"),
    )
    op.create_index("ix_agent_state_changes_agent_at", "agent_state_changes",
                    ["agent_id", "at"])
    op.create_index("ix_agent_state_changes_at", "agent_state_changes", ["at"])
    op.add_column("queues", sa.Column("wrap_up_s", sa.Integer(), nullable=True))
    op.add_column("calls", sa.Column("voicemail_at", sa.DateTime(timezone=True),
                                     nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE calls DROP COLUMN voicemail_at")
    op.execute("ALTER TABLE queues DROP COLUMN wrap_up_s")
    op.drop_index("ix_agent_state_changes_at", table_name="agent_state_changes")
    op.drop_index("ix_agent_state_changes_agent_at", table_name="agent_state_changes")
    op.drop_table("agent_state_changes")
