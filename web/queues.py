"""Queues: adding, changing and removing them, their members, and what routes to them.

The admin page and `switchboard queue` share these, so both check a queue the same way
and write the same audit lines (under the admin's login, or "cli"), each with what
changed before and after. Changes apply from the next card: a card already waiting
keeps the queue it entered, under the queue's new settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from handoff.hours import BadHours, Hours
from handoff.queues import (
    DEFAULT_MAX_WAIT_S,
    DEFAULT_NO_ANSWER_LIMIT,
    DEFAULT_RING_S,
    DEFAULT_SERVICE_LEVEL_S,
    MAX_LEVEL,
    MIN_LEVEL,
    Strategy,
)
from handoff.store import NotFound, Transaction
from handoff.store.models import QueueRecord
from handoff.topics import TOPIC_NAME
from web.people import PersonRefused

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
NAME_RULE = "a queue's name is 1-40 lowercase letters, digits, '_' or '-', starting with a letter"
# (key, lowest, highest): whole seconds, or a count.
LIMITS = {"ring_s": (1, 600), "max_wait_s": (1, 3600), "service_level_s": (1, 3600),
          "no_answer_limit": (0, 50)}
# A queue's own wrap-up time limit; without one, the desk.wrap_up_s setting applies.
WRAP_UP_LIMITS = (0, 600)
# What clears a queue's own wrap-up limit (the API's "", the command line's word).
WRAP_UP_DEFAULT = "default"
EDITABLE = ("strategy", *LIMITS, "wrap_up_s", "disposition_required", "members",
            "assistants", "topics", "hours", "holidays")


class QueueRefused(PersonRefused):
    """Bad input or a clash, as for a person: ``error`` is the API's error code."""


@dataclass(frozen=True, slots=True)
class Settings:
    strategy: Strategy = Strategy.OFFER_ALL
    ring_s: int = DEFAULT_RING_S
    max_wait_s: int = DEFAULT_MAX_WAIT_S
    service_level_s: int = DEFAULT_SERVICE_LEVEL_S
    no_answer_limit: int = DEFAULT_NO_ANSWER_LIMIT
    # Seconds of wrap-up after one of its calls (0: none); None: desk.wrap_up_s.
    wrap_up_s: int | None = None
    # Its agents pick a disposition (web.dispositions) before they are available again.
    disposition_required: bool = False
    # Business hours (handoff.hours): weekly spans and holiday dates, normalised.
    hours: tuple[str, ...] = ()
    holidays: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Routing:
    """Who is in the queue and what comes to it (logins and names, as an admin types)."""

    members: tuple[tuple[str, int], ...] = ()  # (login, level), in order
    assistants: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()


# ---- checks --------------------------------------------------------------------------


def _words(value: Any, key: str) -> tuple[str, ...]:
    """A list of strings, or text separated by commas or spaces (a form field, the CLI)."""
    if isinstance(value, str):
        return tuple(w for w in value.replace(",", " ").split() if w)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise QueueRefused("bad_request", f"{key}: a list of names")


def _count(value: Any, key: str) -> int:
    low, high = LIMITS[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise QueueRefused("bad_request", f"{key}: a whole number, {low} to {high}")
    return value


def _wrap_up(value: Any) -> int | None:
    """A queue's wrap-up limit: whole seconds, or "" / "default" for the site's setting."""
    if isinstance(value, str) and value.strip().lower() in ("", WRAP_UP_DEFAULT):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    low, high = WRAP_UP_LIMITS
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise QueueRefused("bad_request", f"wrap_up_s: a whole number of seconds, {low} to "
                           f"{high}, or {WRAP_UP_DEFAULT!r} for the desk.wrap_up_s setting")
    return value


def _lines(value: Any, key: str) -> list[str]:
    """Spans or dates, as a list (the API) or one a line (the page, the command line)."""
    if isinstance(value, str):
        return [line for line in value.splitlines() if line.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise QueueRefused("bad_hours", f"{key} is a list of strings, or one a line")


def parse_members(value: Any) -> tuple[tuple[str, int], ...]:
    """``[{"login", "level"}]`` (the admin page), or ``login:level`` words (the command
    line, the page's text field); a login without a level gets the middle one."""
    items: list[tuple[Any, Any]] = []
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        items = [(v.get("login"), v.get("level", (MIN_LEVEL + MAX_LEVEL) // 2)) for v in value]
    else:
        for word in _words(value, "members"):
            name, _, typed = word.partition(":")
            items.append((name, typed or (MIN_LEVEL + MAX_LEVEL) // 2))
    members: list[tuple[str, int]] = []
    for login, raw_level in items:
        level = int(raw_level) if isinstance(raw_level, str) and raw_level.isdigit() \
            else raw_level
        if not isinstance(login, str) or not login.strip():
            raise QueueRefused("bad_member", "a member is a login, with a level: login:level")
        if not isinstance(level, int) or isinstance(level, bool) \
                or not MIN_LEVEL <= level <= MAX_LEVEL:
            raise QueueRefused("bad_member", f"{login}: a level is {MIN_LEVEL} to {MAX_LEVEL}")
        if login.strip() in (m[0] for m in members):
            raise QueueRefused("bad_member", f"{login} is listed twice")
        members.append((login.strip(), level))
    return tuple(members)


def build(changes: Mapping[str, Any], base: Settings, routing: Routing
          ) -> tuple[Settings, Routing]:
    """What ``changes`` make of a queue's settings and routing; a key left out (or None)
    keeps its value. QueueRefused names the first field that is wrong."""
    unknown = sorted(set(changes) - {"name", *EDITABLE})
    if unknown:
        raise QueueRefused("bad_request", f"unknown field(s) {', '.join(unknown)}; known: "
                           + ", ".join(("name", *EDITABLE)))
    given = {k: v for k, v in changes.items() if v is not None and k != "name"}
    settings: dict[str, Any] = {}
    if "strategy" in given:
        try:
            settings["strategy"] = Strategy(str(given["strategy"]))
        except ValueError:
            raise QueueRefused("bad_request", "strategy is one of "
                               + ", ".join(s.value for s in Strategy)) from None
    for key in LIMITS:
        if key in given:
            settings[key] = _count(given[key], key)
    if "wrap_up_s" in given:
        settings["wrap_up_s"] = _wrap_up(given["wrap_up_s"])
    if "hours" in given or "holidays" in given:
        try:
            hours = Hours.parse(_lines(given.get("hours", base.hours), "hours"),
                                _lines(given.get("holidays", base.holidays), "holidays"))
        except BadHours as exc:
            raise QueueRefused("bad_hours", str(exc)) from None
        settings.update(hours=tuple(hours.span_texts()), holidays=tuple(hours.holiday_texts()))
    if "disposition_required" in given:
        if not isinstance(given["disposition_required"], bool):
            raise QueueRefused("bad_request", "disposition_required is true or false")
        settings["disposition_required"] = given["disposition_required"]
    new_routing = routing
    if "members" in given:
        new_routing = replace(new_routing, members=parse_members(given["members"]))
    if "assistants" in given:
        new_routing = replace(new_routing,
                              assistants=tuple(dict.fromkeys(_words(given["assistants"],
                                                                    "assistants"))))
    if "topics" in given:
        topics = tuple(dict.fromkeys(_words(given["topics"], "topics")))
        bad = [t for t in topics if not TOPIC_NAME.match(t)]
        if bad:
            raise QueueRefused("bad_topic", f"{bad[0]!r}: a topic name is a-z, 0-9, '_', '-'")
        new_routing = replace(new_routing, topics=topics)
    return replace(base, **settings), new_routing


# ---- reading -------------------------------------------------------------------------


def settings_of(row: QueueRecord) -> Settings:
    return Settings(row.strategy, row.ring_s, row.max_wait_s, row.service_level_s,
                    row.no_answer_limit, row.wrap_up_s, row.disposition_required,
                    tuple(row.hours or ()), tuple(row.holidays or ()))


async def routing_of(tx: Transaction, row: QueueRecord) -> Routing:
    members = tuple((m.login, m.level) for m in await tx.queues.members(row.id))
    return Routing(members, tuple(await tx.queues.assistants_of(row.id)), tuple(row.topics))


async def view(tx: Transaction, row: QueueRecord) -> dict[str, Any]:
    """A queue as the admin page and the command line show it, with its figures."""
    routing = await routing_of(tx, row)
    stats = await tx.queues.stats(row.id)
    return {
        "id": row.id, "name": row.name, **_plain(settings_of(row)),
        "members": [{"login": login, "level": level} for login, level in routing.members],
        "assistants": list(routing.assistants), "topics": list(routing.topics),
        "stats": {**asdict(stats), "service_level": stats.service_level},
    }


def _plain(settings: Settings) -> dict[str, Any]:
    return {k: v.value if isinstance(v, Strategy) else list(v) if isinstance(v, tuple) else v
            for k, v in asdict(settings).items()}


def _routing_plain(routing: Routing) -> dict[str, Any]:
    return {"members": [f"{login}:{level}" for login, level in routing.members],
            "assistants": list(routing.assistants), "topics": list(routing.topics)}


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What an audit line says changed: [old, new] per field."""
    return {k: [before.get(k), after[k]] for k in after if before.get(k) != after[k]}


# ---- writing -------------------------------------------------------------------------


async def _write_routing(tx: Transaction, row: QueueRecord, routing: Routing) -> None:
    members: list[tuple[int, int]] = []
    for login, level in routing.members:
        agent = await tx.agents.by_login(login)
        if agent is None or agent.removed_at is not None:
            raise QueueRefused("bad_member", f"no person {login!r}")
        members.append((agent.id, level))
    assistant_ids: list[int] = []
    for name in routing.assistants:
        assistant = await tx.assistants.by_name(name)
        if assistant is None or assistant.removed_at is not None:
            raise QueueRefused("bad_assistant", f"no assistant {name!r}")
        if assistant.queue_id not in (None, row.id):
            other = await tx.queues.get(assistant.queue_id)
            raise QueueRefused("assistant_taken", f"{name}'s default queue is {other.name}; "
                               "take it out of that queue first")
        assistant_ids.append(assistant.id)
    for other in await tx.queues.listed():
        clash = set(other.topics) & set(routing.topics)
        if other.id != row.id and clash:
            raise QueueRefused("topic_taken", f"topic {sorted(clash)[0]} already goes to "
                               f"queue {other.name}")
    await tx.queues.set_members(row.id, members)
    await tx.queues.set_assistants(row.id, assistant_ids)
    await tx.queues.update(row.id, topics=list(routing.topics))


async def add(tx: Transaction, changes: Mapping[str, Any], *, actor: str) -> QueueRecord:
    name = str(changes.get("name") or "").strip()
    if not _NAME.match(name):
        raise QueueRefused("bad_request", NAME_RULE)
    if await tx.queues.by_name(name) is not None:
        raise QueueRefused("name_taken", f"there is already a queue {name!r} (a removed "
                           "queue's name stays taken)")
    settings, routing = build(changes, Settings(), Routing())
    row = await tx.queues.create(name=name, **asdict(settings))
    await _write_routing(tx, row, routing)
    await tx.audit.record(actor, "queue_added", f"queue:{name}", changed_fields(
        {}, {**_plain(settings), **_routing_plain(routing)}))
    return await tx.queues.get(row.id)


async def edit(tx: Transaction, queue_id: int, changes: Mapping[str, Any], *,
               actor: str) -> QueueRecord:
    row = await _live(tx, queue_id)
    before_settings, before_routing = settings_of(row), await routing_of(tx, row)
    settings, routing = build(changes, before_settings, before_routing)
    await tx.queues.update(queue_id, **asdict(settings))
    await _write_routing(tx, row, routing)
    await tx.audit.record(actor, "queue_changed", f"queue:{row.name}", changed_fields(
        {**_plain(before_settings), **_routing_plain(before_routing)},
        {**_plain(settings), **_routing_plain(routing)}))
    return await tx.queues.get(queue_id)


async def remove(tx: Transaction, queue_id: int, *, actor: str) -> QueueRecord:
    row = await _live(tx, queue_id)
    routing = await routing_of(tx, row)
    row = await tx.queues.remove(queue_id)
    await tx.audit.record(actor, "queue_removed", f"queue:{row.name}",
                          _routing_plain(routing))
    return row


async def _live(tx: Transaction, queue_id: int) -> QueueRecord:
    try:
        row = await tx.queues.get(queue_id)
    except NotFound:
        raise QueueRefused("not_found", f"no queue {queue_id}") from None
    if row.removed_at is not None:
        raise QueueRefused("not_found", f"queue {row.name} was removed")
    return row


async def id_of(tx: Transaction, name: str) -> int:
    row = await tx.queues.by_name(name)
    if row is None or row.removed_at is not None:
        raise QueueRefused("not_found", f"no queue {name!r}")
    return row.id
