"""Indexes on the times the history, the KPI page and the queues' figures scan by range
(calls.started_at, handoffs.requested_at): without them each page view reads every call
the installation ever had.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

Additive only, frozen like 0001: plain names, no model imports.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_handoffs_requested_at", "handoffs", ["requested_at"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_requested_at", table_name="handoffs")
    op.drop_index("ix_calls_started_at", table_name="calls")
