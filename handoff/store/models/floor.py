"""The floor's set-up, as admins define it: assistants and their numbers, queues and
their members, dispositions, trunks; and what the PBX side keeps: SIP blocks, cluster
nodes' leases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from handoff.assistants import (
    DEFAULT_ACCEPT_TIMEOUT_S,
    EngineKind,
    FallbackKind,
    HandoffLevel,
    HoldMode,
)
from handoff.queues import Strategy
from handoff.store.models.base import (
    ENGINE_ADDRESS_LENGTH,
    NODE_NAME_LENGTH,
    PHONE_NUMBER_LENGTH,
    Base,
    enum_type,
)
from handoff.trunks import TrunkAuth


class Assistant(Base):
    __tablename__ = "assistants"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Also its Stasis argument and its events topic: it never changes (like a login).
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    engine: Mapped[EngineKind] = mapped_column(
        enum_type(EngineKind), default=EngineKind.BUILTIN,
        server_default=EngineKind.BUILTIN.value)
    # host:port of an AudioSocket engine; None for the built-in one.
    engine_address: Mapped[str | None] = mapped_column(sa.String(ENGINE_ADDRESS_LENGTH))
    handoff_level: Mapped[HandoffLevel] = mapped_column(
        enum_type(HandoffLevel), default=HandoffLevel.BALANCED
    )
    # [{"name": "billing", "phrases": ["billing dispute", "refund"]}, ...] in the admin's
    # order (handoff.topics): read with the assistant on every caller line, so no join.
    restricted_topics: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list)
    accept_timeout_s: Mapped[int] = mapped_column(default=DEFAULT_ACCEPT_TIMEOUT_S)
    fallback_kind: Mapped[FallbackKind] = mapped_column(
        enum_type(FallbackKind), default=FallbackKind.AI_CALLBACK
    )
    fallback_number: Mapped[str | None] = mapped_column(sa.String(PHONE_NUMBER_LENGTH))
    hold_mode: Mapped[HoldMode] = mapped_column(enum_type(HoldMode), default=HoldMode.AI)
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


class QueueRecord(Base):
    """A queue an admin defines (handoff.queues): who takes its cards, and how."""

    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Like an assistant's: it never changes, and stays taken once removed.
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    strategy: Mapped[Strategy] = mapped_column(enum_type(Strategy))
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


class Disposition(Base):
    """How a call ended for the business ("Sale", "Complaint logged"), as an admin names
    them: the agent picks one at wrap-up and it is kept on the call."""

    __tablename__ = "dispositions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime]
    # Set: no longer offered; calls that have it keep it.
    removed_at: Mapped[datetime | None]


class TrunkRecord(Base):
    """A trunk the admin page or the CLI manages (handoff.trunks.Trunk is what the rest
    of the product sees of it)."""

    __tablename__ = "trunks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40), unique=True)
    host: Mapped[str] = mapped_column(sa.String(253))
    port: Mapped[int]
    auth: Mapped[TrunkAuth] = mapped_column(enum_type(TrunkAuth))
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
