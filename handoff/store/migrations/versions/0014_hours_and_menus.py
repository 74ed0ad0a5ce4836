"""Business hours: an assistant's and a queue's weekly spans and holiday dates
(handoff.hours), and a
DTMF menu before its AI (handoff.menus), and what the caller is told when a person joins
(handoff.assistants.Moment).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

Additive only, frozen like 0001: plain column types, no model imports. Every assistant
there has no spans and no holidays (always open), no menu and no announcements
(silence), as before these columns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
# 0013 is another branch's; the lead relinks this one after it when both are merged.
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("assistants", sa.Column("hours", sa.JSON(), nullable=False,
                                          server_default="[]"))
    op.add_column("assistants", sa.Column("holidays", sa.JSON(), nullable=False,
                                          server_default="[]"))
    op.add_column("assistants", sa.Column("menu", sa.JSON(), nullable=False,
                                          server_default="{}"))
    op.add_column("assistants", sa.Column("announcements", sa.JSON(), nullable=False,
                                          server_default="{}"))
    op.add_column("queues", sa.Column("hours", sa.JSON(), nullable=False,
                                      server_default="[]"))
    op.add_column("queues", sa.Column("holidays", sa.JSON(), nullable=False,
                                      server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.drop_column("holidays")
        batch.drop_column("hours")
    with op.batch_alter_table("assistants") as batch:
        batch.drop_column("announcements")
        batch.drop_column("menu")
        batch.drop_column("holidays")
        batch.drop_column("hours")
