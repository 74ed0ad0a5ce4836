"""A quality record for every handoff: each leg's jitter, loss and round-trip time as
Asterisk measured them when it ended (table leg_quality), the channel of a handoff's
agent leg (how a leg's figures find their handoff, across a controller restart too),
and when Asterisk first received that agent's audio (the connect time's end).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

Additive only. Handoffs there have no agent leg and no media time, and no leg has
figures: their quality shows as not measured. Frozen like 0001: plain column types, no
model imports; plain ALTER TABLE, never batch mode (see 0007).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("handoffs", sa.Column("agent_channel_id", sa.String(128), nullable=True))
    op.add_column("handoffs", sa.Column("media_at", sa.DateTime(timezone=True),
                                        nullable=True))
    op.create_index("ix_handoffs_agent_channel_id", "handoffs", ["agent_channel_id"])
    # A caller's leg finds its call by its channel when its figures come in.
    op.create_index("ix_calls_caller_channel_id", "calls", ["caller_channel_id"])
    op.create_table(
        "leg_quality",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=True),
        sa.Column("leg", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(128), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("packets_received", sa.Integer(), nullable=False),
        sa.Column("jitter_ms", sa.Float(), nullable=True),
        sa.Column("jitter_max_ms", sa.Float(), nullable=True),
        sa.Column("loss_pct", sa.Float(), nullable=True),
        sa.Column("rtt_ms", sa.Float(), nullable=True),
        sa.Column("far_jitter_ms", sa.Float(), nullable=True),
        sa.Column("far_loss_pct", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE",
                                name="fk_leg_quality_call_id_calls"),
        sa.ForeignKeyConstraint(["handoff_id"], ["handoffs.id"], ondelete="CASCADE",
                                name="fk_leg_quality_handoff_id_handoffs"),
        sa.PrimaryKeyConstraint("id", name="pk_leg_quality"),
    )
    op.create_index("ix_leg_quality_call_id", "leg_quality", ["call_id"])
    op.create_index("ix_leg_quality_handoff_id", "leg_quality", ["handoff_id"])


def downgrade() -> None:
    op.drop_index("ix_leg_quality_handoff_id", table_name="leg_quality")
    op.drop_index("ix_leg_quality_call_id", table_name="leg_quality")
    op.drop_table("leg_quality")
    op.drop_index("ix_calls_caller_channel_id", table_name="calls")
    op.drop_index("ix_handoffs_agent_channel_id", table_name="handoffs")
    op.execute("ALTER TABLE handoffs DROP COLUMN media_at")
    op.execute("ALTER TABLE handoffs DROP COLUMN agent_channel_id")
