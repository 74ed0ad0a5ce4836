"""Tables of the Switchboard store (SQLAlchemy 2 typed ORM), one module a part of it:
people (agents, sessions, audit), floor (assistants, queues, trunks, set-up), calls
(calls, handoffs and what they leave).

The schema itself is created and evolved only by the Alembic migrations next to this
package; these classes must match them (a unit test compares the two). Importing this
package puts every table on Base.metadata, which the migrations' env.py and that test
read: a new module's tables must be imported here too.
"""

from handoff.store.models.base import Base, UTCDateTime
from handoff.store.models.calls import (
    Call,
    Contact,
    Handoff,
    LegQualityRecord,
    Note,
    QueueOffer,
    SupervisionRecord,
    TranscriptSegment,
    Transition,
)
from handoff.store.models.floor import (
    Assistant,
    AssistantNumber,
    Disposition,
    Node,
    QueueMember,
    QueueRecord,
    SipBlock,
    TrunkRecord,
)
from handoff.store.models.people import (
    Agent,
    AgentStateChange,
    AuditEvent,
    DashboardSession,
    PauseReason,
)

__all__ = [
    "Agent", "AgentStateChange", "Assistant", "AssistantNumber", "AuditEvent", "Base", "Call",
    "Contact", "DashboardSession", "Disposition", "Handoff", "LegQualityRecord", "Node",
    "Note", "PauseReason", "QueueMember", "QueueOffer", "QueueRecord", "SipBlock",
    "SupervisionRecord", "TranscriptSegment", "Transition", "TrunkRecord", "UTCDateTime",
]
