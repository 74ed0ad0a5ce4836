"""Initial schema: agents, assistants, contacts, calls, handoffs, transcripts, notes,
audit events and the transition log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Frozen on purpose: it spells out plain column types instead of importing the model
classes, so later changes to the models cannot rewrite history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATE = 32
ARI_ID = 128
NUMBER = 64


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(STATE), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("sip_user", sa.String(64), nullable=False),
        sa.Column("sip_password", sa.String(128), nullable=False),
        sa.Column("endpoint_kind", sa.String(STATE), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("on_duty", sa.Boolean(), nullable=False),
        sa.Column("presence", sa.String(STATE), nullable=False),
        sa.Column("seat", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("login", name="uq_agents_login"),
        sa.UniqueConstraint("sip_user", name="uq_agents_sip_user"),
    )
    op.create_table(
        "assistants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("number_pattern", sa.String(NUMBER), nullable=False),
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("handoff_level", sa.String(STATE), nullable=False),
        sa.Column("restricted_topics", sa.JSON(), nullable=False),
        sa.Column("accept_timeout_s", sa.Integer(), nullable=False),
        sa.Column("fallback_kind", sa.String(STATE), nullable=False),
        sa.Column("fallback_number", sa.String(NUMBER), nullable=True),
        sa.Column("hold_mode", sa.String(STATE), nullable=False),
        sa.Column("control_token_hash", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assistants"),
        sa.UniqueConstraint("name", name="uq_assistants_name"),
    )
    op.create_table(
        "contacts",
        sa.Column("number", sa.String(NUMBER), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_contacts"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("at", nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_table(
        "calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("assistant_id", sa.Integer(), nullable=True),
        sa.Column("caller_number", sa.String(NUMBER), nullable=False),
        sa.Column("caller_name", sa.String(128), nullable=True),
        sa.Column("caller_channel_id", sa.String(ARI_ID), nullable=False),
        sa.Column("bridge_id", sa.String(ARI_ID), nullable=True),
        sa.Column("ai_channel_id", sa.String(ARI_ID), nullable=True),
        sa.Column("agent_channel_id", sa.String(ARI_ID), nullable=True),
        sa.Column("state", sa.String(STATE), nullable=False),
        sa.Column("outcome", sa.String(STATE), nullable=True),
        sa.Column("end_cause", sa.String(64), nullable=True),
        sa.Column("recording_path", sa.String(512), nullable=True),
        _timestamp("started_at", nullable=False),
        _timestamp("answered_at"),
        _timestamp("ended_at"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.ForeignKeyConstraint(
            ["assistant_id"], ["assistants.id"],
            name="fk_calls_assistant_id_assistants", ondelete="SET NULL",
        ),
    )
    op.create_index("ix_calls_state", "calls", ["state"])
    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(STATE), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(128), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("target_agent_id", sa.Integer(), nullable=True),
        _timestamp("requested_at", nullable=False),
        _timestamp("offered_at"),
        _timestamp("accepted_at"),
        sa.Column("accepted_by", sa.Integer(), nullable=True),
        _timestamp("connected_at"),
        _timestamp("ended_at"),
        sa.Column("failure_reason", sa.String(STATE), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_handoffs"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_handoffs_call_id_calls", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["target_agent_id"], ["agents.id"], name="fk_handoffs_target_agent_id_agents"
        ),
        sa.ForeignKeyConstraint(
            ["accepted_by"], ["agents.id"], name="fk_handoffs_accepted_by_agents"
        ),
    )
    op.create_index("ix_handoffs_call_id", "handoffs", ["call_id"])
    op.create_index("ix_handoffs_state", "handoffs", ["state"])
    op.create_index("ix_handoffs_accepted_by", "handoffs", ["accepted_by"])
    op.create_table(
        "transcript_segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        _timestamp("at", nullable=False),
        sa.Column("speaker", sa.String(STATE), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transcript_segments"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"],
            name="fk_transcript_segments_call_id_calls", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_transcript_segments_call_at", "transcript_segments", ["call_id", "at"])
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=True),
        sa.Column("contact_number", sa.String(NUMBER), nullable=True),
        sa.Column("author_id", sa.Integer(), nullable=True),
        _timestamp("at", nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_notes_call_id_calls", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["author_id"], ["agents.id"], name="fk_notes_author_id_agents"),
    )
    op.create_index("ix_notes_call_id", "notes", ["call_id"])
    op.create_index("ix_notes_contact_number", "notes", ["contact_number"])
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=True),
        sa.Column("machine", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(STATE), nullable=False),
        sa.Column("event", sa.String(STATE), nullable=False),
        sa.Column("to_state", sa.String(STATE), nullable=False),
        _timestamp("at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transitions"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_transitions_call_id_calls", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["handoff_id"], ["handoffs.id"],
            name="fk_transitions_handoff_id_handoffs", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_transitions_call_id", "transitions", ["call_id"])


def downgrade() -> None:
    for table in (
        "transitions", "notes", "transcript_segments", "handoffs", "calls",
        "audit_events", "contacts", "assistants", "agents",
    ):
        op.drop_table(table)
