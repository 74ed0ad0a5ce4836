"""Duty is folded into presence: off duty is exactly "offline".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Before, duty and presence were written separately, so an agent could be on duty and
"offline" (choosing it in the desk's menu: no card was offered to them, yet their
Accept was taken) or off duty and "available" (going off duty left the presence as it
was). From here the presence lifecycle (handoff.agents.PRESENCE) writes both together;
this brings the rows already there under the same rule. Neither kind of agent was
offered cards, so both become off duty and offline: nobody starts getting calls
because of a migration. Data only, frozen like 0001: no model imports.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE agents SET on_duty = false, presence = 'offline' "
        "WHERE on_duty = false OR presence = 'offline'"
    )


def downgrade() -> None:
    # The old rule accepted every row the new one leaves: nothing to undo.
    pass
