"""The people of the floor: agents (and supervisors, admins), their state changes and
pause reasons, their dashboard sessions, and the audit log of what they did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from handoff.agents import AgentRole, EndpointKind, Presence
from handoff.store.models.base import Base, enum_type


class PauseReason(Base):
    """Why an agent is away, as an admin names it (a break, a meeting, training): the
    board shows it with the pause's duration, and productive pauses (work off the phone)
    are told apart from the rest in the figures, as call-centre consoles do."""

    __tablename__ = "pause_reasons"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stays taken once removed, so an old audit line's reason still names one thing.
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    productive: Mapped[bool]
    created_at: Mapped[datetime]
    # Set: no longer offered on the desk; agents already paused for it keep it.
    removed_at: Mapped[datetime | None]


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(128))
    role: Mapped[AgentRole] = mapped_column(enum_type(AgentRole), default=AgentRole.AGENT)
    # None: the agent cannot log in to the dashboard yet (account set up by an admin).
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    sip_user: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Kept readable because Asterisk's PJSIP auth section needs it to challenge the
    # softphone's REGISTER; the rendered pjsip.conf is the only other place it goes.
    sip_password: Mapped[str] = mapped_column(sa.String(128))
    endpoint_kind: Mapped[EndpointKind] = mapped_column(
        enum_type(EndpointKind), default=EndpointKind.WEBRTC
    )
    skills: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    # False: a supervisor or admin who only supervises and administers: no duty, no
    # cards, no presence on their desk (their phone still rings for supervision).
    takes_calls: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # A SIP desk phone that auto-answers on request (Call-Info answer-after=0) keeps an
    # open line on duty, as a browser phone does (handoff.live.lines); false: it rings.
    open_line: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The cluster node whose Asterisk holds that desk phone's open line (None: none held,
    # or a single box): a survivor calls the phone again when that node is lost.
    line_node: Mapped[str | None] = mapped_column(sa.String(64))
    on_duty: Mapped[bool] = mapped_column(default=False)
    presence: Mapped[Presence] = mapped_column(enum_type(Presence), default=Presence.OFFLINE)
    # When the presence (or the pause reason) last changed: the board's "away 12 min".
    presence_since: Mapped[datetime | None]
    # The reason an agent away chose (None: away without one, or not away).
    pause_reason_id: Mapped[int | None] = mapped_column(sa.ForeignKey("pause_reasons.id"))
    seat: Mapped[str | None] = mapped_column(sa.String(64))
    # Set: no sign-in, no card, no SIP endpoint (handoff.store.agents_repo.disable).
    disabled_at: Mapped[datetime | None]
    # Set (with disabled_at): gone from every list; the row stays for the history.
    removed_at: Mapped[datetime | None]

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


class AgentStateChange(Base):
    """One change of an agent's state, as it happened: the state entered, and the pause
    reason with an away. A state lasts until the agent's next row, so the floor's figures
    (time away per reason, productive or not; time in wrap-up) are sums over these rows,
    not a parse of the audit log. Written with the change itself (AgentsRepo)."""

    __tablename__ = "agent_state_changes"
    __table_args__ = (sa.Index("ix_agent_state_changes_agent_at", "agent_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(sa.ForeignKey("agents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(index=True)
    # available, away, wrap_up or off_duty (handoff.agents.AgentState); on a call is the
    # handoffs' to tell.
    state: Mapped[str] = mapped_column(sa.String(32))
    pause_reason_id: Mapped[int | None] = mapped_column(sa.ForeignKey("pause_reasons.id"))


class DashboardSession(Base):
    """A signed-in dashboard browser. Deleting the row signs the browser out everywhere:
    the cookie alone proves nothing once its row is gone (logout, expiry, revocation)."""

    __tablename__ = "dashboard_sessions"

    # SHA-256 of the cookie value, never the value: a copy of this table (a backup, a
    # replica) holds no session anyone could replay.
    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    agent_id: Mapped[int] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    # The synchronizer token every state-changing request of this session must echo.
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    # An agent login, "controller", or "assistant:<name>".
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str] = mapped_column(sa.String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
