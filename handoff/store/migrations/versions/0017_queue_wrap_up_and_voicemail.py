"""A queue's own wrap-up time limit, and when a caller began leaving a voicemail.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01

(agent_state_changes, which the policy branch first wrote as its 0015 with these two
columns, is main's 0015 as it stands: a database already there keeps it.) Queues there
have no limit of their own (the desk.wrap_up_s setting applies, as before); calls there
have no voicemail. Additive only, frozen like 0001: plain column types, no model
imports; plain ALTER TABLE to drop them (see 0007).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Seconds of wrap-up after one of the queue's calls; NULL: desk.wrap_up_s.
    op.add_column("queues", sa.Column("wrap_up_s", sa.Integer(), nullable=True))
    # From here on the call's recording is the caller's message.
    op.add_column("calls", sa.Column("voicemail_at", sa.DateTime(timezone=True),
                                     nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE calls DROP COLUMN voicemail_at")
    op.execute("ALTER TABLE queues DROP COLUMN wrap_up_s")
