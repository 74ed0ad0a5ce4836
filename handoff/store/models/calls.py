"""Calls and what they leave: the call itself, its handoffs to people and their queue
offers, the legs' quality, transcript, notes, state transitions; and the contacts
(numbers) calls come from."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from handoff.calls import CallDirection, CallOutcome, CallState, Speaker
from handoff.handoffs import FailureReason, HandoffState
from handoff.queues import OfferOutcome
from handoff.store.models.base import (
    ARI_ID_LENGTH,
    ENUM_LENGTH,
    NODE_NAME_LENGTH,
    PHONE_NUMBER_LENGTH,
    Base,
    enum_type,
)


class Contact(Base):
    __tablename__ = "contacts"

    number: Mapped[str] = mapped_column(sa.String(PHONE_NUMBER_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    # Set by an agent ("call this person back"); cleared when the conversation is resolved.
    follow_up: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The conversation was resolved by hand at this moment; calls that ended later and
    # still need something (a callback request, an abandoned call) reopen it.
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[int | None]


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    assistant_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("assistants.id", ondelete="SET NULL")
    )
    caller_number: Mapped[str] = mapped_column(sa.String(PHONE_NUMBER_LENGTH), index=True)
    caller_name: Mapped[str | None] = mapped_column(sa.String(128))
    caller_channel_id: Mapped[str] = mapped_column(sa.String(ARI_ID_LENGTH), index=True)
    # Outbound: a call-back; the "caller" columns then describe the person called.
    direction: Mapped[CallDirection] = mapped_column(
        enum_type(CallDirection), default=CallDirection.INBOUND,
        server_default=CallDirection.INBOUND.value)
    bridge_id: Mapped[str | None] = mapped_column(sa.String(ARI_ID_LENGTH))
    ai_channel_id: Mapped[str | None] = mapped_column(sa.String(ARI_ID_LENGTH))
    agent_channel_id: Mapped[str | None] = mapped_column(sa.String(ARI_ID_LENGTH))
    state: Mapped[CallState] = mapped_column(enum_type(CallState), index=True)
    outcome: Mapped[CallOutcome | None] = mapped_column(enum_type(CallOutcome))
    # Asterisk's hangup cause text (e.g. "Normal Clearing") or ours ("pbx_restart").
    end_cause: Mapped[str | None] = mapped_column(sa.String(64))
    recording_path: Mapped[str | None] = mapped_column(sa.String(512))
    started_at: Mapped[datetime] = mapped_column(index=True)  # history and KPI ranges
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=1)
    # When the caller began leaving a voicemail (the assistant's fallback): the message
    # is the call's recording from there on. None: no voicemail.
    voicemail_at: Mapped[datetime | None]
    # What the agent who handled it picked at wrap-up (None: none yet).
    disposition_id: Mapped[int | None] = mapped_column(sa.ForeignKey("dispositions.id"))
    # The cluster node whose Asterisk holds the caller's leg (None: a single box). Only
    # that node's controller can reach the call; a survivor ends it if the node is lost.
    node: Mapped[str | None] = mapped_column(sa.String(NODE_NAME_LENGTH), index=True)


class Handoff(Base):
    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(
        sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[HandoffState] = mapped_column(enum_type(HandoffState), index=True)
    # Why a person was asked for: "caller_request", "ai_decision", "restricted_topic",
    # "supervisor", "transfer"; AI engines may send their own words.
    reason: Mapped[str] = mapped_column(sa.String(64))
    topic: Mapped[str | None] = mapped_column(sa.String(128))
    priority: Mapped[int] = mapped_column(default=0)
    summary: Mapped[str | None] = mapped_column(sa.Text)
    # The note a transferring agent leaves for the next one.
    note: Mapped[str | None] = mapped_column(sa.Text)
    # Set for a transfer to a named agent: only that agent's card can accept.
    target_agent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("agents.id"))
    requested_at: Mapped[datetime] = mapped_column(index=True)  # KPI and queue ranges
    offered_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    accepted_by: Mapped[int | None] = mapped_column(sa.ForeignKey("agents.id"), index=True)
    connected_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    failure_reason: Mapped[FailureReason | None] = mapped_column(enum_type(FailureReason))
    attempt: Mapped[int] = mapped_column(default=1)
    version: Mapped[int] = mapped_column(default=1)
    # The queue whose members it is offered to (its strategy, ring window, maximum
    # wait); None: every available agent, as without queues.
    queue_id: Mapped[int | None] = mapped_column(sa.ForeignKey("queues.id"), index=True)
    # The agent's leg once it rings: its figures (LegQualityRecord) find this handoff by it.
    agent_channel_id: Mapped[str | None] = mapped_column(sa.String(ARI_ID_LENGTH), index=True)
    # When Asterisk first received the agent's audio: accepted_at to this is the
    # connect time (None: no packet came within Timing.agent_media_wait_s).
    media_at: Mapped[datetime | None]


class QueueOffer(Base):
    """One offer of a queued card: to whom (None: every member), when, how it ended.
    What the floor view counts: offers, accepts, no-answers, and (with the handoff's
    times) waits and the service level."""

    __tablename__ = "queue_offers"
    __table_args__ = (sa.Index("ix_queue_offers_queue_offered", "queue_id", "offered_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    queue_id: Mapped[int] = mapped_column(sa.ForeignKey("queues.id"))
    handoff_id: Mapped[int] = mapped_column(
        sa.ForeignKey("handoffs.id", ondelete="CASCADE"), index=True)
    call_id: Mapped[str] = mapped_column(sa.ForeignKey("calls.id", ondelete="CASCADE"))
    agent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("agents.id"), index=True)
    offered_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[OfferOutcome | None] = mapped_column(enum_type(OfferOutcome))
    # This no-answer was the one too many: the member was set away for it (their run
    # of misses starts again after it).
    set_away: Mapped[bool] = mapped_column(default=False)


class LegQualityRecord(Base):
    """How one leg of a call sounded, as Asterisk measured it when the leg ended
    (handoff.quality.LegQuality): the caller's leg (handoff_id None) or an agent's."""

    __tablename__ = "leg_quality"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(
        sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    handoff_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("handoffs.id", ondelete="CASCADE"), index=True)
    leg: Mapped[str] = mapped_column(sa.String(ENUM_LENGTH))  # "caller" or "agent"
    channel_id: Mapped[str] = mapped_column(sa.String(ARI_ID_LENGTH))
    ended_at: Mapped[datetime]
    packets_received: Mapped[int]
    jitter_ms: Mapped[float | None] = mapped_column(sa.Float)
    jitter_max_ms: Mapped[float | None] = mapped_column(sa.Float)
    loss_pct: Mapped[float | None] = mapped_column(sa.Float)
    rtt_ms: Mapped[float | None] = mapped_column(sa.Float)
    far_jitter_ms: Mapped[float | None] = mapped_column(sa.Float)
    far_loss_pct: Mapped[float | None] = mapped_column(sa.Float)


class SupervisionRecord(Base):
    """A supervisor's session on a live call (handoff.supervision), as the node holding
    the call keeps it: every node's board and panel read it here, whichever node holds
    the call. Gone when the session ends; a restarted node drops its own, a survivor a
    lost node's."""

    __tablename__ = "supervisions"

    call_id: Mapped[str] = mapped_column(
        sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    supervisor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True)
    mode: Mapped[str] = mapped_column(sa.String(ENUM_LENGTH))  # listen, whisper or barge
    node: Mapped[str | None] = mapped_column(sa.String(NODE_NAME_LENGTH), index=True)
    started_at: Mapped[datetime]


class TranscriptSegment(Base):
    __tablename__ = "transcript_segments"
    __table_args__ = (sa.Index("ix_transcript_segments_call_at", "call_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(sa.ForeignKey("calls.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    speaker: Mapped[Speaker] = mapped_column(enum_type(Speaker))
    text: Mapped[str] = mapped_column(sa.Text)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    # Notes outlive one call: the contact page shows every note for the number.
    contact_number: Mapped[str | None] = mapped_column(
        sa.String(PHONE_NUMBER_LENGTH), index=True
    )
    author_id: Mapped[int | None] = mapped_column(sa.ForeignKey("agents.id"))
    at: Mapped[datetime]
    text: Mapped[str] = mapped_column(sa.Text)


class Transition(Base):
    """One row per state change of a call or a handoff: the persisted `from -> event -> to`."""

    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(
        sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    handoff_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("handoffs.id", ondelete="CASCADE")
    )
    machine: Mapped[str] = mapped_column(sa.String(16))
    from_state: Mapped[str] = mapped_column(sa.String(ENUM_LENGTH))
    event: Mapped[str] = mapped_column(sa.String(ENUM_LENGTH))
    to_state: Mapped[str] = mapped_column(sa.String(ENUM_LENGTH))
    at: Mapped[datetime]
