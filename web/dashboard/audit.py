"""The audit log as the admin reads it: each line a sentence ("Ada signed in from
10.0.0.7"), filtered by person, action and date on the server.

The store keeps what was done in codes (actor login, action, subject such as
``agent:3``, a JSON detail), which is what a script or an export wants; the sentence is
composed here, with people's names as they are today.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from handoff.agents import PresenceEvent
from handoff.store.audit_repo import AuditFilter
from handoff.store.models import AuditEvent
from web.dashboard.guard import json_error
from web.dashboard.typedefs import DASHBOARD
from web.dashboard.words import ACTIONS, ACTORS, MODES, PRESENCES, ROLES, Site, word

AUDIT_PAGE = 200


class BadAuditFilter(ValueError):
    pass


@dataclass(frozen=True)
class Names:
    """Who is who, for the sentences: logins and agent ids to display names."""

    by_login: Mapping[str, str]
    by_id: Mapping[int, str]

    def actor(self, login: str) -> str:
        if login in ACTORS:
            return ACTORS[login]
        if login.startswith("assistant:"):
            return f"Assistant {login.removeprefix('assistant:')}"
        return self.by_login.get(login, login)

    def subject(self, subject: str) -> str:
        kind, _, key = subject.partition(":")
        if kind == "agent" and key.isdigit():
            return self.by_id.get(int(key), f"person {key}")
        if kind in ("number", "trunk", "queue", "pause_reason", "disposition"):
            return key
        if kind == "call":
            return "a call"
        return subject


Sentence = Callable[[str, str, dict[str, Any], Names], str]


def _address(detail: dict[str, Any]) -> str:
    address = detail.get("address")
    return f" from {address}" if address else ""


def _presence(who: str, whom: str, d: dict[str, Any], _n: Names) -> str:
    event = d.get("event")
    if event == PresenceEvent.WRAP_UP_BEGINS:
        return f"{whom} began wrap-up after a call"
    if event == PresenceEvent.WRAP_UP_ENDS:
        return f"{whom}'s wrap-up ended: available"
    if event == PresenceEvent.PHONE_LOST:
        return f"{whom} was set away: their phone stopped answering"
    state = word(PRESENCES, d.get("presence")).lower()
    if d.get("pause_reason"):
        kind = "productive" if d.get("productive") else "not productive"
        state = f"{state}: {d['pause_reason']} ({kind})"
    return f"{who} chose {state}" if who == whom else f"{who} set {whom} {state}"


def _duty(who: str, whom: str, d: dict[str, Any], _n: Names) -> str:
    went = "on duty" if d.get("on_duty") else "off duty"
    because = f" ({d['why']})" if d.get("why") else ""
    if who == whom:
        return f"{who} went {went}{because}"
    return f"{who} put {whom} {went}{because}"


def _supervised(mode: str) -> Sentence:
    def say(who: str, _whom: str, d: dict[str, Any], n: Names) -> str:
        caller = f" of {d['caller']}" if d.get("caller") else ""
        agent = d.get("agent_id")
        with_agent = f" with {n.by_id.get(agent, 'an agent')}" if isinstance(agent, int) else ""
        return f"{who}: {word(MODES, mode)} on the call{caller}{with_agent}"
    return say


SENTENCES: Mapping[str, Sentence] = {
    "login": lambda who, _s, d, _n: f"{who} signed in{_address(d)}",
    "login_failed": lambda who, _s, d, _n: f"A sign-in as {who} failed{_address(d)}",
    "login_refused": lambda who, _s, d, _n:
        f"{who} could not sign in{_address(d)}: the account is disabled",
    "logout": lambda who, _s, _d, _n: f"{who} signed out",
    "duty_change": _duty,
    "presence_change": _presence,
    "role_change": lambda who, whom, d, _n:
        f"{who} made {whom} {word(ROLES, d.get('to')).lower()} "
        f"(was {word(ROLES, d.get('from')).lower()})",
    "takes_calls_change": lambda who, whom, d, _n:
        f"{who} set {whom} to {'take calls' if d.get('takes_calls') else 'take no calls'}",
    "agent_created": lambda who, whom, d, _n:
        f"{who} added {whom} ({word(ROLES, d.get('role')).lower()})",
    "agent_disabled": lambda who, whom, _d, _n: f"{who} disabled {whom}",
    "agent_enabled": lambda who, whom, _d, _n: f"{who} enabled {whom}",
    "agent_removed": lambda who, whom, _d, _n: f"{who} removed {whom}",
    "password_reset": lambda who, whom, _d, _n: f"{who} reset {whom}'s password",
    "agent_renamed": lambda who, _whom, d, _n:
        f"{who} renamed {d.get('from', 'someone')} to {d.get('to', '?')}",
    "assistant_created": lambda who, _s, d, _n: f"{who} added assistant {d.get('name', '')}",
    "assistant_changed": lambda who, _s, d, _n:
        f"{who} changed an assistant: {', '.join(k.replace('_', ' ') for k in d) or 'nothing'}",
    "assistant_token_rotated": lambda who, _s, d, _n:
        f"{who} gave assistant {d.get('name', '')} a new token",
    "assistant_disabled": lambda who, _s, d, _n: f"{who} disabled assistant {d.get('name', '')}",
    "assistant_enabled": lambda who, _s, d, _n: f"{who} enabled assistant {d.get('name', '')}",
    "assistant_removed": lambda who, _s, d, _n: f"{who} removed assistant {d.get('name', '')}",
    "trunk_added": lambda who, whom, _d, _n: f"{who} added trunk {whom}",
    "trunk_changed": lambda who, whom, d, _n:
        f"{who} changed trunk {whom}: {', '.join(k.replace('_', ' ') for k in d) or 'nothing'}",
    "trunk_removed": lambda who, whom, _d, _n: f"{who} removed trunk {whom}",
    "queue_added": lambda who, whom, _d, _n: f"{who} added queue {whom}",
    "queue_changed": lambda who, whom, d, _n:
        f"{who} changed queue {whom}: {', '.join(k.replace('_', ' ') for k in d) or 'nothing'}",
    "queue_removed": lambda who, whom, _d, _n: f"{who} removed queue {whom}",
    "pause_reason_added": lambda who, whom, d, _n:
        f"{who} added pause reason {whom} "
        f"({'productive' if d.get('productive') else 'not productive'})",
    "pause_reason_removed": lambda who, whom, _d, _n: f"{who} removed pause reason {whom}",
    "disposition_added": lambda who, whom, _d, _n: f"{who} added disposition {whom}",
    "disposition_removed": lambda who, whom, _d, _n: f"{who} removed disposition {whom}",
    "disposition_set": lambda who, _s, d, _n:
        f"{who} gave a call the disposition {d.get('disposition', '')}",
    "sip_address_blocked": lambda _w, whom, d, _n:
        f"{whom} was blocked after {d.get('failures', 'many')} failed SIP sign-ins",
    "sip_block_lifted": lambda who, whom, _d, _n: f"{who} lifted the block on {whom}",
    "test_call": lambda who, whom, _d, _n: f"{who} placed a test call to {whom}",
    "call_back": lambda who, whom, _d, _n: f"{who} called {whom} back",
    "outbound_refused": lambda _w, whom, d, _n:
        f"A call out to {whom} was refused: {d.get('reason', '')}".rstrip(": "),
    "follow_up": lambda who, whom, d, _n:
        f"{who} marked {whom} as {'needing' if d.get('follow_up') else 'not needing'} "
        "follow-up",
    "resolve": lambda who, whom, _d, _n: f"{who} marked {whom} resolved",
    "call_ended": lambda who, _s, _d, _n: f"{who} ended a call",
    "returned_to_ai": lambda who, _s, _d, _n: f"{who} returned a call to the AI",
    "transfer": lambda who, _s, d, n:
        f"{who} transferred a call to {n.by_id.get(d.get('to_agent', -1), 'a colleague')}",
    **{mode: _supervised(mode) for mode in MODES},
    "supervision_ended": lambda who, _s, d, _n:
        f"{who} stopped supervising a call" + (f" ({d['why']})" if d.get("why") else ""),
    "recordings_expired": lambda _w, whom, d, _n:
        f"{whom} recordings deleted, older than {d.get('keep_days', '?')} days",
}


def sentence(event: AuditEvent, names: Names) -> str:
    who, whom = names.actor(event.actor), names.subject(event.subject)
    detail = event.detail if isinstance(event.detail, dict) else {}
    say = SENTENCES.get(event.action)
    if say is not None:
        try:
            return say(who, whom, detail, names)
        except (KeyError, TypeError, ValueError):
            pass  # a line written by an older version, with other fields
    # An action this version has no sentence for (a newer one wrote it): still words.
    return f"{who}: {word(ACTIONS, event.action).lower()} ({whom})"


def audit_json(event: AuditEvent, names: Names, site: Site) -> dict[str, Any]:
    return {"id": event.id, "at": event.at.isoformat(), "when": site.when(event.at),
            "actor": event.actor, "action": event.action, "subject": event.subject,
            "detail": event.detail, "said": sentence(event, names)}


def parse_audit_filter(query: Mapping[str, str], site: Site,
                       people: Mapping[int, str]) -> tuple[AuditFilter, int]:
    """The audit log's filters from a query string: person (an agent id), action, from
    and to (site dates), limit. BadAuditFilter says which one is wrong."""
    raw = query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_PAGE:
        raise BadAuditFilter(f"limit is 1 to {AUDIT_PAGE}")
    login = agent_id = None
    if query.get("person"):
        person = query["person"]
        if not person.isdigit() or int(person) not in people:
            raise BadAuditFilter("person is the id of a person (see the Agents table)")
        agent_id, login = int(person), people[int(person)]
    action = query.get("action") or None
    if action is not None and action not in ACTIONS:
        raise BadAuditFilter("action is one of " + ", ".join(ACTIONS))
    try:
        since, until = site.day_range(query.get("from"), query.get("to"))
    except ValueError:
        raise BadAuditFilter("from and to are dates (YYYY-MM-DD)") from None
    if since is not None and until is not None and until <= since:
        raise BadAuditFilter("to is on or after from")
    return AuditFilter(login=login, agent_id=agent_id, action=action, since=since,
                       until=until), int(raw)


async def audit_log(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    site = dashboard.options.site
    async with dashboard.store.transaction() as tx:
        everyone = await tx.agents.all(include_removed=True)
        try:
            where, limit = parse_audit_filter(request.query, site,
                                              {a.id: a.login for a in everyone})
        except BadAuditFilter as exc:
            return json_error(400, "bad_filter", str(exc))
        events = await tx.audit.recent(limit, where)
    names = Names({a.login: a.display_name for a in everyone},
                  {a.id: a.display_name for a in everyone})
    return web.json_response({"events": [audit_json(e, names, site) for e in events]})
