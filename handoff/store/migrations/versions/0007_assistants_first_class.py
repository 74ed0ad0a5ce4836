"""Assistants as first-class objects: several numbers each, an engine, disable and remove.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

An assistant answers any number of DIDs (``assistant_numbers``, one assistant per
pattern), its engine is the built-in receptionist or an AudioSocket host:port, and it
can be disabled (its numbers get the unknown-number treatment) or removed (the row
stays for the calls that name it). The single ``number_pattern`` becomes the first row
of ``assistant_numbers``; ``adapter`` becomes ``engine`` ("builtin" stays built-in,
anything else was an AudioSocket engine). Frozen like 0001: plain column types, no
model imports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NUMBER = 64


def upgrade() -> None:
    op.create_table(
        "assistant_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assistant_id", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(NUMBER), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assistant_numbers"),
        sa.UniqueConstraint("pattern", name="uq_assistant_numbers_pattern"),
        sa.ForeignKeyConstraint(
            ["assistant_id"], ["assistants.id"],
            name="fk_assistant_numbers_assistant_id_assistants", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_assistant_numbers_assistant_id", "assistant_numbers", ["assistant_id"])
    op.execute(
        "INSERT INTO assistant_numbers (assistant_id, pattern) "
        "SELECT id, number_pattern FROM assistants"
    )
    # Plain ALTER TABLE, never batch mode: on SQLite a batch copies and drops the table,
    # and dropping "assistants" with foreign keys on would empty assistant_numbers and
    # set every call's assistant_id to NULL. SQLite drops a column itself since 3.35.
    op.add_column("assistants", sa.Column("engine", sa.String(32), nullable=False,
                                          server_default="builtin"))
    op.add_column("assistants", sa.Column("engine_address", sa.String(300), nullable=True))
    op.add_column("assistants", sa.Column("disabled_at", sa.DateTime(timezone=True),
                                          nullable=True))
    op.add_column("assistants", sa.Column("removed_at", sa.DateTime(timezone=True),
                                          nullable=True))
    op.execute("UPDATE assistants SET engine = 'audiosocket' WHERE adapter <> 'builtin'")
    op.execute("ALTER TABLE assistants DROP COLUMN number_pattern")
    op.execute("ALTER TABLE assistants DROP COLUMN adapter")


def downgrade() -> None:
    op.add_column("assistants", sa.Column("number_pattern", sa.String(NUMBER), nullable=False,
                                          server_default=""))
    op.add_column("assistants", sa.Column("adapter", sa.String(64), nullable=False,
                                          server_default="audiosocket"))
    op.execute("UPDATE assistants SET adapter = engine")
    op.execute(
        "UPDATE assistants SET number_pattern = COALESCE((SELECT MIN(n.pattern) FROM "
        "assistant_numbers n WHERE n.assistant_id = assistants.id), '')"
    )
    for column in ("removed_at", "disabled_at", "engine_address", "engine"):
        op.execute(f"ALTER TABLE assistants DROP COLUMN {column}")
    op.drop_index("ix_assistant_numbers_assistant_id", table_name="assistant_numbers")
    op.drop_table("assistant_numbers")
