"""Queues: members with a level, a strategy, a ring window, a maximum wait, a service
level; assistants' default queues and the queue of each handoff; one row per offer.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

Existing assistants get no queue, so their cards go on reaching every available agent
as before. Frozen like 0001: plain column types, no model imports. Columns are added
with a plain ALTER TABLE, never batch mode (see 0007: a batch copy of "assistants" or
"handoffs" would cascade through their foreign keys).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _add_queue_column(table: str) -> None:
    """``<table>.queue_id`` referencing queues (a queue is never deleted, only marked
    removed). SQLite adds a column's foreign key only inline, in the ALTER TABLE itself
    (it cannot add a constraint afterwards)."""
    name = f"fk_{table}_queue_id_queues"
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} ADD COLUMN queue_id INTEGER "
                   f"CONSTRAINT {name} REFERENCES queues (id)")
        return
    op.add_column(table, sa.Column("queue_id", sa.Integer(), nullable=True))
    op.create_foreign_key(name, table, "queues", ["queue_id"], ["id"])


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("ring_s", sa.Integer(), nullable=False),
        sa.Column("max_wait_s", sa.Integer(), nullable=False),
        sa.Column("service_level_s", sa.Integer(), nullable=False),
        sa.Column("no_answer_limit", sa.Integer(), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queues"),
        sa.UniqueConstraint("name", name="uq_queues_name"),
    )
    op.create_table(
        "queue_members",
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"], ondelete="CASCADE",
                                name="fk_queue_members_queue_id_queues"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE",
                                name="fk_queue_members_agent_id_agents"),
        sa.PrimaryKeyConstraint("queue_id", "agent_id", name="pk_queue_members"),
    )
    op.create_index("ix_queue_members_agent_id", "queue_members", ["agent_id"])
    op.create_table(
        "queue_offers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("set_away", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"],
                                name="fk_queue_offers_queue_id_queues"),
        sa.ForeignKeyConstraint(["handoff_id"], ["handoffs.id"], ondelete="CASCADE",
                                name="fk_queue_offers_handoff_id_handoffs"),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE",
                                name="fk_queue_offers_call_id_calls"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"],
                                name="fk_queue_offers_agent_id_agents"),
        sa.PrimaryKeyConstraint("id", name="pk_queue_offers"),
    )
    op.create_index("ix_queue_offers_handoff_id", "queue_offers", ["handoff_id"])
    op.create_index("ix_queue_offers_agent_id", "queue_offers", ["agent_id"])
    op.create_index("ix_queue_offers_queue_offered", "queue_offers",
                    ["queue_id", "offered_at"])
    _add_queue_column("assistants")
    _add_queue_column("handoffs")
    op.create_index("ix_handoffs_queue_id", "handoffs", ["queue_id"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_queue_id", table_name="handoffs")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("fk_handoffs_queue_id_queues", "handoffs", type_="foreignkey")
        op.drop_constraint("fk_assistants_queue_id_queues", "assistants", type_="foreignkey")
    op.execute("ALTER TABLE handoffs DROP COLUMN queue_id")
    op.execute("ALTER TABLE assistants DROP COLUMN queue_id")
    op.drop_table("queue_offers")
    op.drop_table("queue_members")
    op.drop_table("queues")
