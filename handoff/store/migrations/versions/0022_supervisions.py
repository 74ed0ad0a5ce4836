"""Supervisors' sessions on live calls in the shared store (table supervisions), so
every node's board and panel show a listen, whisper or barge whichever node holds the
call (handoff.supervision).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02

Additive only, frozen like 0001: plain column types, no model imports. Sessions open at
the upgrade are the controller's, which records them again when their mode changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "supervisions",
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("supervisor_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("node", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE",
                                name="fk_supervisions_call_id_calls"),
        sa.ForeignKeyConstraint(["supervisor_id"], ["agents.id"], ondelete="CASCADE",
                                name="fk_supervisions_supervisor_id_agents"),
        sa.PrimaryKeyConstraint("call_id", "supervisor_id", name="pk_supervisions"),
    )
    op.create_index("ix_supervisions_supervisor_id", "supervisions", ["supervisor_id"])
    op.create_index("ix_supervisions_node", "supervisions", ["node"])


def downgrade() -> None:
    op.drop_index("ix_supervisions_node", table_name="supervisions")
    op.drop_index("ix_supervisions_supervisor_id", table_name="supervisions")
    op.drop_table("supervisions")
