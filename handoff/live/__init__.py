"""The live call: one mixing bridge per call, the AI leg, the move to an agent and back.

The caller's channel enters the call bridge when the call is answered and stays there
until the call ends; every change of who the caller talks to is a change of the *other*
legs in that bridge. So the caller's SIP dialog is never touched: no re-INVITE, no
transfer, no BYE until the call really ends.

Order per call: every leg we create gets an id that starts with the caller's channel
id (see :mod:`handoff.live.legs`), and the ARI client orders events by that prefix, so
all events of one call are handled one after the other while different calls run
concurrently. Commands that do not come from ARI (an Accept click, an AI's handoff
request) take the call's lock.

:class:`CallControl` (:mod:`handoff.live.control`) is the one object the rest of the
product holds; its module docstring maps the flows to their modules.
"""

from handoff.live.ai import AI_FAILED_REASON
from handoff.live.call import LiveCall, Party, Transfer
from handoff.live.control import CallControl
from handoff.live.engines import REJECT, ExternalEngine
from handoff.live.errors import (
    AgentNotAvailable,
    AgentUnreachable,
    CallStateConflict,
    NodeUnanswered,
    OutOfHours,
    QueueNotAvailable,
)
from handoff.live.flow import AiEngine, Timing
from handoff.live.legs import add_when_in_stasis, call_key
from handoff.live.lines import LineBackoff, LineRefused
from handoff.live.offer import CALLBACK_NOTE

__all__ = [
    "AI_FAILED_REASON",
    "CALLBACK_NOTE",
    "REJECT",
    "AgentNotAvailable",
    "AgentUnreachable",
    "AiEngine",
    "CallControl",
    "CallStateConflict",
    "ExternalEngine",
    "LineBackoff",
    "LineRefused",
    "LiveCall",
    "NodeUnanswered",
    "OutOfHours",
    "Party",
    "QueueNotAvailable",
    "Timing",
    "Transfer",
    "add_when_in_stasis",
    "call_key",
]
