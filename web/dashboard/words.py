"""What the pages say: the codes of calls, handoffs, people and the audit log in people's
words, and times in the site's zone, in one format.

One place for both. The server-rendered pages use these functions (Jinja globals and
filters, set up in routes.py); the payloads the page scripts get carry the sentences
the server composed (a card's why, an audit line, a time); and what a script must name
itself (an agent's state from a socket delta, a call's state on the board) it looks up
in `WORDS`, sent once per page in base.html. No page script keeps its own dictionary.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Final

from handoff.agents import AgentRole, AgentState, Presence, agent_state
from handoff.assistants import FallbackKind, HandoffLevel
from handoff.calls import CallOutcome, CallState, Speaker
from handoff.handoffs import HandoffState
from handoff.hours import server_zone
from handoff.supervision import Mode
from handoff.trunks import COUNTRIES, CountryPlan

log = logging.getLogger(__name__)

# Why a person was asked for (handoffs.reason). The AI control API's reasons, the
# controller's own (a transfer, the AI failing, a call-back), and the older spelling
# some rows still have.
REASONS: Final[Mapping[str, str]] = {
    "caller_asked": "Asked for a person",
    "caller_request": "Asked for a person",
    "ai_cannot_help": "The AI could not help",
    "restricted_topic": "Restricted topic",
    "policy": "A rule asks for a person",
    "transfer": "Transferred by a colleague",
    "ai_failed": "The AI stopped working",
    "call_back": "Call-back",
    "menu": "Chose this queue in the menu",
}

# handoff.handoffs.urgency(): a normal card says nothing about it.
URGENCIES: Final[Mapping[str, str]] = {"normal": "", "high": "Urgent", "emergency": "Emergency"}

OUTCOMES: Final[Mapping[str, str]] = {
    CallOutcome.COMPLETED_BY_AI: "Handled by the AI",
    CallOutcome.COMPLETED_BY_AGENT: "Handled by a person",
    CallOutcome.ABANDONED: "Caller hung up waiting",
    CallOutcome.FALLBACK_NUMBER: "Forwarded to the fallback number",
    CallOutcome.CALLBACK_REQUESTED: "Call-back requested",
    CallOutcome.PBX_RESTART: "Cut off by a phone system restart",
    CallOutcome.PBX_LOST: "Cut off: its phone system node was lost",
    CallOutcome.FAILED: "Failed",
    CallOutcome.NOT_ANSWERED: "Not answered",
}

CALL_STATES: Final[Mapping[str, str]] = {
    CallState.NEW: "Ringing",
    CallState.WITH_AI: "With the AI",
    CallState.HANDOFF_PENDING: "Waiting for a person",
    CallState.WITH_AGENT: "With a person",
    CallState.FORWARDED: "Forwarded",
    CallState.ENDED: "Ended",
}

# A handoff as the transferring agent follows it ("Transferring to Bob (ringing)").
HANDOFF_STATES: Final[Mapping[str, str]] = {
    HandoffState.REQUESTED: "asking",
    HandoffState.OFFERED: "offered",
    HandoffState.ACCEPTED: "accepted",
    HandoffState.CONNECTING: "ringing",
    HandoffState.CONNECTED: "connected",
    HandoffState.RETURNED_TO_AI: "back with the AI",
    HandoffState.COMPLETED: "done",
    HandoffState.ABANDONED: "caller hung up",
    HandoffState.TIMED_OUT: "not taken in time",
    HandoffState.FAILED: "failed",
}

AGENT_STATES: Final[Mapping[str, str]] = {
    AgentState.ON_CALL: "On a call",
    AgentState.WRAP_UP: "Wrap-up",
    AgentState.AVAILABLE: "Available",
    AgentState.AWAY: "Away",
    AgentState.OFF_DUTY: "Off duty",
}
# The desk's presence menu: off a call, a presence is the state it gives.
PRESENCES: Final[Mapping[str, str]] = {
    p: AGENT_STATES[agent_state(p, on_call=False)] for p in Presence}

ROLES: Final[Mapping[str, str]] = {
    AgentRole.AGENT: "Agent", AgentRole.SUPERVISOR: "Supervisor", AgentRole.ADMIN: "Admin"}

SPEAKERS: Final[Mapping[str, str]] = {
    Speaker.CALLER: "Caller", Speaker.AI: "AI", Speaker.AGENT: "Agent", Speaker.SYSTEM: "—"}

# A supervisor on a call, as the board says it ("you: listening").
MODES: Final[Mapping[str, str]] = {
    Mode.LISTEN: "listening", Mode.WHISPER: "whispering", Mode.BARGE: "barged in",
    Mode.TAKE_OVER: "took over"}

# The admin page's menus of an assistant's rules.
CHOICES: Final[Mapping[str, str]] = {
    HandoffLevel.AI_ONLY: "AI only", HandoffLevel.QUICK: "Quick",
    HandoffLevel.BALANCED: "Balanced", HandoffLevel.AI_FIRST: "AI first",
    FallbackKind.NUMBER: "Forward to a number", FallbackKind.AI_CALLBACK: "AI takes a call-back",
    FallbackKind.VOICEMAIL: "Voicemail (a call-back with the message)",
}

# The audit log's actions, as its filter lists them.
ACTIONS: Final[Mapping[str, str]] = {
    "login": "Signed in",
    "login_failed": "Failed sign-in",
    "login_refused": "Sign-in refused",
    "logout": "Signed out",
    "duty_change": "Duty",
    "presence_change": "Presence",
    "role_change": "Role changed",
    "takes_calls_change": "Takes calls",
    "open_line_change": "Desk phone open line",
    "agent_created": "Person added",
    "agent_disabled": "Person disabled",
    "agent_enabled": "Person enabled",
    "agent_removed": "Person removed",
    "password_reset": "Password reset",
    "agent_renamed": "Person renamed",
    "assistant_created": "Assistant added",
    "assistant_changed": "Assistant changed",
    "assistant_token_rotated": "Assistant token",
    "assistant_disabled": "Assistant disabled",
    "assistant_enabled": "Assistant enabled",
    "assistant_removed": "Assistant removed",
    "trunk_added": "Trunk added",
    "trunk_changed": "Trunk changed",
    "trunk_removed": "Trunk removed",
    "queue_added": "Queue added",
    "queue_changed": "Queue changed",
    "queue_removed": "Queue removed",
    "pause_reason_added": "Pause reason added",
    "pause_reason_removed": "Pause reason removed",
    "disposition_added": "Disposition added",
    "disposition_removed": "Disposition removed",
    "disposition_set": "Disposition given",
    "sip_address_blocked": "Address blocked",
    "sip_block_lifted": "Block lifted",
    "test_call": "Test call",
    "call_back": "Call-back",
    "outbound_refused": "Call out refused",
    "follow_up": "Follow-up",
    "resolve": "Resolved",
    "call_ended": "Call ended",
    "returned_to_ai": "Returned to the AI",
    "transfer": "Transfer",
    Mode.LISTEN: "Listen",
    Mode.WHISPER: "Whisper",
    Mode.BARGE: "Barge",
    Mode.TAKE_OVER: "Take over",
    "supervision_ended": "Supervision ended",
    "recordings_expired": "Recordings deleted",
}

# Actors that are not people (handoff.agents.CONTROLLER, web.cli, the SIP guard, ...).
ACTORS: Final[Mapping[str, str]] = {
    "controller": "Switchboard",
    "cli": "The command line",
    "sip-guard": "The SIP guard",
    "retention": "Recording retention",
    "policy": "Policy",
    "-": "Someone",
}


def word(table: Mapping[str, str], code: str | None) -> str:
    """`code` in words; a code this table does not know yet (a newer engine's reason)
    is shown spelled out rather than as an identifier."""
    if code is None:
        return ""
    return table.get(code, code.replace("_", " ").capitalize())


def topic_name(topic: str | None) -> str:
    """A topic as people name it: "lost_card" is "Lost card"."""
    return (topic or "").replace("_", " ").replace("-", " ").strip().capitalize()


def why(reason: str, topic: str | None) -> str:
    """A card's or a call's reason line: "Asked for a person · Billing"."""
    return " · ".join(part for part in (word(REASONS, reason), topic_name(topic)) if part)


# The desk's browser phone and open line in its top bar (the states softphone.js and
# openline.js name). A phone state missing here is shown by the reason the phone gave
# (an error, another tab holding the phone). "reconnecting": its SIP WebSocket dropped
# (a network blip); a call goes on meanwhile, and JsSIP connects and registers again.
PHONE_STATES: Final[Mapping[str, str]] = {
    "starting": "Phone: starting…",
    "registering": "Phone: connecting…",
    "reconnecting": "Phone: reconnecting…",
    "registered": "Phone: ready",
    "none": "No browser phone on this desk",
}

LINE_STATES: Final[Mapping[str, str]] = {
    "opening": "Line: opening…",
    "open": "Line: open",
    "down": "Line: down, reopening…",
    "down_retry": "Line: down, next try in {s} s",  # desk.js puts the seconds in
}

# What the page scripts look up themselves (base.html sends it once).
WORDS: Final[Mapping[str, Mapping[str, str]]] = {
    "urgencies": URGENCIES, "call_states": CALL_STATES, "agent_states": AGENT_STATES,
    "handoff_states": HANDOFF_STATES, "roles": ROLES, "speakers": SPEAKERS, "modes": MODES,
    "choices": CHOICES, "phone_states": PHONE_STATES, "line_states": LINE_STATES,
}


# ---- the site: its zone and its country -----------------------------------------------

TIME_FORMAT = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Site:
    """Where the call centre is: the zone its people read times in, the country whose
    numbers they type (asterisk.country)."""

    zone: tzinfo
    country: CountryPlan

    @classmethod
    def of(cls, time_zone: str = "", country: str = "us") -> Site:
        """`time_zone`: desk.time_zone (checked at start-up), empty for the server's."""
        zone = zoneinfo.ZoneInfo(time_zone) if time_zone else server_zone()
        return cls(zone, COUNTRIES[country])

    def local(self, moment: datetime) -> datetime:
        # The store keeps UTC; SQLite hands it back without a zone.
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return aware.astimezone(self.zone)

    def when(self, moment: datetime | str | None) -> str:
        """Every time a page shows, in one format: 2026-01-12 16:44 (site zone)."""
        if moment is None or moment == "":
            return ""
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        return self.local(moment).strftime(TIME_FORMAT)

    def day_start(self, day: date) -> datetime:
        """Midnight of `day` on the site's clocks, in UTC: a filter "from 12 Jan" means
        the site's 12 January, not the server's."""
        return datetime.combine(day, time.min, self.zone).astimezone(UTC)

    def day_range(self, first: str | None, last: str | None) -> tuple[datetime | None,
                                                                       datetime | None]:
        """[from, to] as typed in a date filter (YYYY-MM-DD, both days included);
        ValueError for anything else."""
        since = self.day_start(date.fromisoformat(first)) if first else None
        until = self.day_start(date.fromisoformat(last) + timedelta(days=1)) if last else None
        return since, until

    def placeholders(self) -> dict[str, str]:
        """Examples in the country's numbering for the fields where numbers are typed."""
        return {"number": self.country.example_number,
                "number_start": f"+{self.country.code}…",
                "patterns": self.country.pattern_example}


def template_globals(site: Site) -> dict[str, Any]:
    return {
        # base.html sends it with Jinja's tojson, which escapes <, > and &: the map
        # cannot end its <script type="application/json"> early.
        "words": WORDS, "when": site.when, "placeholders": site.placeholders(),
        "outcome_word": lambda code: word(OUTCOMES, code),
        "presence_word": lambda code: word(PRESENCES, code),
        "role_word": lambda code: word(ROLES, code),
        "speaker_word": lambda code: word(SPEAKERS, code),
        "state_word": lambda code: word(AGENT_STATES, code),
        "outcomes": OUTCOMES, "presences": PRESENCES, "roles_words": ROLES,
    }
