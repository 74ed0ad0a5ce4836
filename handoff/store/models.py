"""Tables of the Switchboard store (SQLAlchemy 2 typed ORM).

The schema itself is created and evolved only by the Alembic migrations next to this
module; these classes must match them (a unit test compares the two).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from handoff.agents import AgentRole, EndpointKind, Presence
from handoff.assistants import (
    DEFAULT_ACCEPT_TIMEOUT_S,
    EngineKind,
    FallbackKind,
    HandoffLevel,
    HoldMode,
)
from handoff.calls import CallDirection, CallOutcome, CallState, Speaker
from handoff.handoffs import FailureReason, HandoffState
from handoff.queues import OfferOutcome, Strategy
from handoff.trunks import TrunkAuth

# Short state names are stored as their lowercase values in a plain VARCHAR (no native
# PostgreSQL ENUM type): adding a state then needs no ALTER TYPE migration.
ENUM_LENGTH = 32
# An ARI channel or bridge id ("1700000000.42" or a uuid we pass in).
ARI_ID_LENGTH = 128
# A cluster node's name (cluster.node).
NODE_NAME_LENGTH = 64
PHONE_NUMBER_LENGTH = 64
# host:port of an AI engine's AudioSocket listener (a DNS name may be long).
ENGINE_ADDRESS_LENGTH = 300

EnumT = TypeVar("EnumT", bound=enum.StrEnum)


def _enum_type(enum_class: type[EnumT]) -> sa.Enum:
    return sa.Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=ENUM_LENGTH,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite keeps no offset, so values are normalised to UTC on the way in and tagged
    UTC on the way out; a naive datetime is refused rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timestamps in UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}
    # Stable constraint names, identical on SQLite and PostgreSQL, so later migrations
    # can drop or alter them by name.
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


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


class Disposition(Base):
    """How a call ended for the business ("Sale", "Complaint logged"), as an admin names
    them: the agent picks one at wrap-up and it is kept on the call."""

    __tablename__ = "dispositions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime]
    # Set: no longer offered; calls that have it keep it.
    removed_at: Mapped[datetime | None]


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(128))
    role: Mapped[AgentRole] = mapped_column(_enum_type(AgentRole), default=AgentRole.AGENT)
    # None: the agent cannot log in to the dashboard yet (account set up by an admin).
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    sip_user: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Kept readable because Asterisk's PJSIP auth section needs it to challenge the
    # softphone's REGISTER; the rendered pjsip.conf is the only other place it goes.
    sip_password: Mapped[str] = mapped_column(sa.String(128))
    endpoint_kind: Mapped[EndpointKind] = mapped_column(
        _enum_type(EndpointKind), default=EndpointKind.WEBRTC
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
    presence: Mapped[Presence] = mapped_column(_enum_type(Presence), default=Presence.OFFLINE)
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


class Assistant(Base):
    __tablename__ = "assistants"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Also its Stasis argument and its events topic: it never changes (like a login).
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    engine: Mapped[EngineKind] = mapped_column(
        _enum_type(EngineKind), default=EngineKind.BUILTIN,
        server_default=EngineKind.BUILTIN.value)
    # host:port of an AudioSocket engine; None for the built-in one.
    engine_address: Mapped[str | None] = mapped_column(sa.String(ENGINE_ADDRESS_LENGTH))
    handoff_level: Mapped[HandoffLevel] = mapped_column(
        _enum_type(HandoffLevel), default=HandoffLevel.BALANCED
    )
    # [{"name": "billing", "phrases": ["billing dispute", "refund"]}, ...] in the admin's
    # order (handoff.topics): read with the assistant on every caller line, so no join.
    restricted_topics: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list)
    accept_timeout_s: Mapped[int] = mapped_column(default=DEFAULT_ACCEPT_TIMEOUT_S)
    fallback_kind: Mapped[FallbackKind] = mapped_column(
        _enum_type(FallbackKind), default=FallbackKind.AI_CALLBACK
    )
    fallback_number: Mapped[str | None] = mapped_column(sa.String(PHONE_NUMBER_LENGTH))
    hold_mode: Mapped[HoldMode] = mapped_column(_enum_type(HoldMode), default=HoldMode.AI)
    # Business hours (handoff.hours), in the site's zone: weekly spans as the admin wrote
    # them, normalised ("mon-fri 09:00-17:00"), and ISO holiday dates. Both empty: always
    # open. Read at the start of every call, so a change applies to the next one.
    hours: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    holidays: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    # A DTMF menu before the AI (handoff.menus): {"prompt", "options": ["1=assistant:sales",
    # ...]}; empty: the AI answers at once.
    menu: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, server_default="{}")
    # What the caller is told when a person joins (handoff.assistants.Moment: handover,
    # takeover, transfer): {"handover": "You are now speaking with ..."}; a moment not
    # there: silence, the person simply speaks.
    announcements: Mapped[dict[str, str]] = mapped_column(sa.JSON, default=dict,
                                                          server_default="{}")
    # Its calls' cards go to this queue's members, unless their topic has a queue of its
    # own; None: to every available agent.
    queue_id: Mapped[int | None] = mapped_column(sa.ForeignKey("queues.id"))
    # Hash of the bearer token the AI engine uses on the control API.
    control_token_hash: Mapped[str] = mapped_column(sa.String(255))
    # Set: its numbers are not answered (they get routing.unknown_numbers' treatment);
    # calls already up go on.
    disabled_at: Mapped[datetime | None]
    # Set (with disabled_at): gone from the lists, its numbers free again, its token
    # refused; the row stays for the calls that name it.
    removed_at: Mapped[datetime | None]

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


class AssistantNumber(Base):
    """A number (DID) an assistant answers, as a strict dialplan pattern. One assistant
    per pattern: Asterisk refuses the same extension twice in a context."""

    __tablename__ = "assistant_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    assistant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("assistants.id", ondelete="CASCADE"), index=True
    )
    pattern: Mapped[str] = mapped_column(sa.String(PHONE_NUMBER_LENGTH), unique=True)


class TrunkRecord(Base):
    """A trunk the admin page or the CLI manages (handoff.trunks.Trunk is what the rest
    of the product sees of it)."""

    __tablename__ = "trunks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40), unique=True)
    host: Mapped[str] = mapped_column(sa.String(253))
    port: Mapped[int]
    auth: Mapped[TrunkAuth] = mapped_column(_enum_type(TrunkAuth))
    # A registering trunk's digest account; empty for one recognised by address. The
    # password is kept readable: Asterisk answers the carrier's challenges with it.
    username: Mapped[str] = mapped_column(sa.String(64))
    password: Mapped[str] = mapped_column(sa.String(128))
    caller_id: Mapped[str] = mapped_column(sa.String(PHONE_NUMBER_LENGTH))
    codecs: Mapped[list[str]] = mapped_column(sa.JSON)
    patterns: Mapped[list[str]] = mapped_column(sa.JSON)
    allow_international: Mapped[bool]
    allow_premium: Mapped[bool]
    enabled: Mapped[bool]
    created_at: Mapped[datetime]


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
        _enum_type(CallDirection), default=CallDirection.INBOUND,
        server_default=CallDirection.INBOUND.value)
    bridge_id: Mapped[str | None] = mapped_column(sa.String(ARI_ID_LENGTH))
    ai_channel_id: Mapped[str | None] = mapped_column(sa.String(ARI_ID_LENGTH))
    agent_channel_id: Mapped[str | None] = mapped_column(sa.String(ARI_ID_LENGTH))
    state: Mapped[CallState] = mapped_column(_enum_type(CallState), index=True)
    outcome: Mapped[CallOutcome | None] = mapped_column(_enum_type(CallOutcome))
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


class Node(Base):
    """A cluster node's lease: its controller renews it every few seconds; once it has
    expired, one surviving controller takes over the node's open calls (lost_at, lost_to)
    (handoff.nodes)."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(sa.String(NODE_NAME_LENGTH), primary_key=True)
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    lost_at: Mapped[datetime | None]
    lost_to: Mapped[str | None] = mapped_column(sa.String(NODE_NAME_LENGTH))


class Handoff(Base):
    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(
        sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[HandoffState] = mapped_column(_enum_type(HandoffState), index=True)
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
    failure_reason: Mapped[FailureReason | None] = mapped_column(_enum_type(FailureReason))
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


class QueueRecord(Base):
    """A queue an admin defines (handoff.queues): who takes its cards, and how."""

    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Like an assistant's: it never changes, and stays taken once removed.
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    strategy: Mapped[Strategy] = mapped_column(_enum_type(Strategy))
    # How long one member has an assigned card before it moves on (a no-answer).
    ring_s: Mapped[int]
    # How long a caller waits in the queue before the assistant's fallback applies.
    max_wait_s: Mapped[int]
    # A card taken within this many seconds counts as answered within service level.
    service_level_s: Mapped[int]
    # Offers missed in a row that set a member away (0: never).
    no_answer_limit: Mapped[int]
    # The topic names (handoff.topics) whose cards come here, whatever the assistant.
    topics: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    # Business hours (handoff.hours), as an assistant's: out of them the queue takes no
    # card and the assistant's fallback applies at once. Both empty: always open.
    hours: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    holidays: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    # The wrap-up time limit after one of its calls (None: the desk.wrap_up_s setting).
    wrap_up_s: Mapped[int | None]
    # True: an agent who took one of its calls picks a disposition before they are
    # available again.
    disposition_required: Mapped[bool] = mapped_column(default=False,
                                                       server_default=sa.false())
    created_at: Mapped[datetime]
    # Set: gone from the lists and from routing; the row stays for the figures.
    removed_at: Mapped[datetime | None]


class QueueMember(Base):
    __tablename__ = "queue_members"

    queue_id: Mapped[int] = mapped_column(
        sa.ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[int] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True)
    # The member's place in the list: round robin's order, and ties broken.
    position: Mapped[int]
    # 1-5: how good the member is at this queue's work (skills-weighted picks the best).
    level: Mapped[int]


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
    outcome: Mapped[OfferOutcome | None] = mapped_column(_enum_type(OfferOutcome))
    # This no-answer was the one too many: the member was set away for it (their run
    # of misses starts again after it).
    set_away: Mapped[bool] = mapped_column(default=False)


class TranscriptSegment(Base):
    __tablename__ = "transcript_segments"
    __table_args__ = (sa.Index("ix_transcript_segments_call_at", "call_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(sa.ForeignKey("calls.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    speaker: Mapped[Speaker] = mapped_column(_enum_type(Speaker))
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


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    # An agent login, "controller", or "assistant:<name>".
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str] = mapped_column(sa.String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


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


class SipBlock(Base):
    """An address the PBX refuses for a while because it kept failing authentication
    (a SIP scanner guessing accounts and passwords). Kept after it ends, for the record."""

    __tablename__ = "sip_blocks"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(64), index=True)
    blocked_at: Mapped[datetime]
    until: Mapped[datetime]
    # Failed authentications counted in the window that led to the block.
    failures: Mapped[int]
    # An admin ended it early (their login), or None.
    lifted_at: Mapped[datetime | None]
    lifted_by: Mapped[str | None] = mapped_column(sa.String(64))
