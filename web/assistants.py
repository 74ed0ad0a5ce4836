"""Assistants: adding, editing, disabling, enabling and removing AI voice agents, and
their control tokens.

The admin page and the `switchboard assistant` command share these, so both check a
name, a number and an engine the same way and write the same audit lines (under the
acting admin's login, or "cli"). A token is returned once and only its hash is stored.

An assistant on the built-in engine has no token anyone is shown: each running
product's receptionist holds one of its own, never stored, which that process's API
accepts for the assistants on the built-in engine (:func:`seat_builtin`). The stored
hash of such an assistant is of a token nobody holds, so switching an assistant to the
built-in engine also cuts off the token its external engine had.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from handoff.assistants import (
    DEFAULT_ACCEPT_TIMEOUT_S,
    EngineKind,
    FallbackKind,
    HandoffLevel,
    Moment,
    check_announcements,
)
from handoff.callback import BadNumber, check_number
from handoff.hours import BadHours, Hours
from handoff.menus import BadMenu, Menu
from handoff.store import Store, Transaction
from handoff.store.models import Assistant
from handoff.topics import BadTopics, Topic, check_topics, topics_of
from pbx.config_values import ConfigValueError, check_host, check_name, check_pattern, check_port
from web.ai_api import hash_control_token, new_control_token
from web.people import PersonRefused

MAX_TIMEOUT_S = 600
ENGINE_RULE = "engine is 'builtin' or the AudioSocket address of your engine, host:port"


class AssistantRefused(PersonRefused):
    """Bad input or a clash, as for a person: ``error`` is the API's error code."""


@dataclass(frozen=True, slots=True)
class Engine:
    kind: EngineKind
    address: str | None = None

    def __str__(self) -> str:
        return self.address or self.kind.value


@dataclass(frozen=True, slots=True)
class Rules:
    """The handoff settings an admin tunes; they apply from the next handoff on."""

    handoff_level: HandoffLevel
    accept_timeout_s: int
    fallback_kind: FallbackKind
    fallback_number: str | None


@dataclass(frozen=True, slots=True)
class Issued:
    assistant: Assistant
    numbers: list[str]
    # The control token, shown once; None for the built-in engine (Switchboard's own).
    token: str | None


# ---- checks --------------------------------------------------------------------------


def parse_engine(raw: str) -> Engine:
    raw = raw.strip()
    if raw == EngineKind.BUILTIN.value:
        return Engine(EngineKind.BUILTIN)
    host, sep, port = raw.rpartition(":")
    try:
        if not sep or not port.isdigit():
            raise ConfigValueError("engine", ENGINE_RULE)
        check_host("engine", host)
        check_port("engine", int(port))
    except ConfigValueError:
        raise AssistantRefused("bad_engine", f"{raw!r}: {ENGINE_RULE}") from None
    return Engine(EngineKind.AUDIOSOCKET, f"{host}:{port}")


def check_numbers(raw: Iterable[str]) -> list[str]:
    """Strict dialplan patterns only (digits, or _ with X, Z, N and [ranges]): nothing a
    caller sends reaches Dial, and no '.' or '!' catches numbers by accident."""
    numbers = []
    for number in raw:
        try:
            numbers.append(check_pattern("number", str(number).strip()))
        except ConfigValueError as exc:
            raise AssistantRefused("bad_number", str(exc)) from None
    return list(dict.fromkeys(numbers))


def check_rules(level: str, timeout: object, fallback_kind: str, number: str | None) -> Rules:
    try:
        handoff_level, kind = HandoffLevel(level), FallbackKind(fallback_kind)
    except ValueError:
        raise AssistantRefused("bad_request", "handoff_level is one of "
                               + ", ".join(h.value for h in HandoffLevel) + "; fallback_kind "
                               "one of " + ", ".join(f.value for f in FallbackKind)) from None
    if not isinstance(timeout, int) or isinstance(timeout, bool) or \
            not 5 <= timeout <= MAX_TIMEOUT_S:
        raise AssistantRefused("bad_request",
                               f"accept_timeout_s is whole seconds, 5 to {MAX_TIMEOUT_S}")
    number = (number or "").strip() or None
    if kind is FallbackKind.NUMBER:
        if number is None:
            raise AssistantRefused("bad_request", "a number fallback needs fallback_number")
        try:
            # Dialled over the trunk by the controller: the same strict check as a callback.
            number = check_number(number)
        except BadNumber as exc:
            raise AssistantRefused("bad_number", str(exc)) from None
    return Rules(handoff_level, timeout, kind, number)


def parse_topics(raw: object) -> list[Topic]:
    """An admin's restricted topics, checked (names, phrases): the admin page sends
    ``[{"name", "phrases"}]``, the command line its ``NAME=phrase,phrase`` arguments."""
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        raw = [_topic_argument(item) for item in raw]
    try:
        return check_topics(raw)
    except BadTopics as exc:
        raise AssistantRefused("bad_topic", str(exc)) from None


def _topic_argument(text: str) -> dict[str, Any]:
    name, sep, phrases = text.partition("=")
    if not sep:
        raise AssistantRefused("bad_topic", f"{text!r}: a topic is NAME=phrase,phrase")
    return {"name": name, "phrases": [p for p in phrases.split(",") if p.strip()]}


def hours_from(given: Mapping[str, object], current: Assistant | None) -> Hours | None:
    """The business hours ``given`` names (``hours``: weekly spans such as "mon-fri
    09:00-17:00"; ``holidays``: YYYY-MM-DD dates), the one it leaves out keeping its
    current value; None if it names neither. Empty lists: always open."""
    if given.get("hours") is None and given.get("holidays") is None:
        return None
    merged = []
    for key in ("hours", "holidays"):
        raw = given.get(key)
        if raw is None:
            raw = getattr(current, key, None) or []
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise AssistantRefused("bad_hours", f"{key} is a list of strings")
        merged.append(raw)
    try:
        return Hours.parse(*merged)
    except BadHours as exc:
        raise AssistantRefused("bad_hours", str(exc)) from None


def menu_from(given: Mapping[str, object], current: Assistant | None) -> Menu | None:
    """The DTMF menu ``given`` names (``menu_prompt``: what callers hear; ``menu``:
    ``KEY=assistant:NAME`` or ``KEY=queue:NAME`` lines), the one it leaves out keeping
    its current value; None if it names neither. No lines: no menu."""
    if given.get("menu_prompt") is None and given.get("menu") is None:
        return None
    now = Menu.of(current) if current is not None else Menu()
    prompt, lines = given.get("menu_prompt"), given.get("menu")
    if lines is None:
        lines = now.lines()
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise AssistantRefused("bad_menu", "menu is a list of KEY=assistant:NAME or "
                               "KEY=queue:NAME lines")
    try:
        return Menu.parse(str(now.prompt if prompt is None else prompt), lines)
    except BadMenu as exc:
        raise AssistantRefused("bad_menu", str(exc)) from None


async def _menu_leads_somewhere(tx: Transaction, menu: Menu, name: str) -> None:
    """Each key leads to an assistant or queue there is, and not back to this menu."""
    for key, choice in menu.options:
        if choice.kind == "queue":
            found = await tx.queues.by_name(choice.name) is not None
        else:
            target = await tx.assistants.by_name(choice.name)
            found = target is not None and target.removed_at is None
            if choice.name == name:
                raise AssistantRefused("bad_menu", f"key {key} leads back to this menu's "
                                       "own assistant, which answers anyway without a key")
        if not found:
            raise AssistantRefused("bad_menu", f"key {key}: there is no {choice.kind} "
                                   f"{choice.name!r}")


def announcements_from(given: Mapping[str, object]) -> dict[str, str] | None:
    """What the caller is told when a person joins (``announcements``: the page's
    ``{moment: words}``, or the command line's ``MOMENT=words`` lines; the moments given
    replace them all, one left out is silence); None if not given."""
    raw = given.get("announcements")
    if raw is None:
        return None
    if isinstance(raw, list) and all(isinstance(line, str) for line in raw):
        pairs = [line.partition("=") for line in raw if line.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise AssistantRefused("bad_announcement", "an announcement is MOMENT=words")
        raw = {moment.strip(): words for moment, _, words in pairs}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise AssistantRefused("bad_announcement", "announcements are words by moment: "
                               + ", ".join(m.value for m in Moment))
    try:
        return check_announcements(raw)
    except ValueError as exc:
        raise AssistantRefused("bad_announcement", str(exc)) from None


def rules_from(given: Mapping[str, object], current: Assistant | None) -> Rules | None:
    """The handoff rules ``given`` names, each key it leaves out keeping its current (or
    default) value; None if it names none of them."""
    if not any(given.get(key) is not None for key in RULE_KEYS):
        return None
    now = view(current, []) if current is not None else {
        "handoff_level": HandoffLevel.BALANCED.value,
        "accept_timeout_s": DEFAULT_ACCEPT_TIMEOUT_S,
        "fallback_kind": FallbackKind.AI_CALLBACK.value, "fallback_number": ""}
    merged = {key: now[key] if given.get(key) is None else given[key] for key in RULE_KEYS}
    return check_rules(str(merged["handoff_level"]), merged["accept_timeout_s"],
                       str(merged["fallback_kind"]), str(merged["fallback_number"] or ""))


async def _numbers_free(tx: Transaction, numbers: Sequence[str], assistant_id: int) -> None:
    for number in numbers:
        owner = await tx.assistants.owner_of(number)
        if owner is not None and owner.id != assistant_id:
            raise AssistantRefused("number_taken",
                                   f"{number} is already answered by assistant {owner.name}")


def _token_for(engine: Engine) -> tuple[str | None, str]:
    """(the token to show, the hash to store). The built-in engine's stored hash is of a
    token nobody holds until the running receptionist is seated with its own."""
    token = new_control_token()
    return (None if engine.kind is EngineKind.BUILTIN else token), hash_control_token(token)


# ---- changes -------------------------------------------------------------------------


async def add(
    tx: Transaction, *, name: str, numbers: Iterable[str], engine: str, actor: str,
    rules: Rules | None = None, topics: Sequence[Topic] = (), hours: Hours | None = None,
    menu: Menu | None = None, announcements: dict[str, str] | None = None,
) -> Issued:
    try:
        name = check_name("name", name.strip())
    except ConfigValueError:
        raise AssistantRefused("bad_request", f"{name!r}: an assistant's name starts with a "
                               "letter and holds only letters, digits, '-' or '_' (40 at "
                               "most)") from None
    patterns, kind = check_numbers(numbers), parse_engine(engine)
    if await tx.assistants.by_name(name) is not None:
        raise AssistantRefused("name_taken", f"there is already an assistant {name!r} "
                               "(a removed one keeps its name for the history)")
    await _numbers_free(tx, patterns, 0)
    token, token_hash = _token_for(kind)
    extra: dict[str, Any] = {}
    if rules is not None:
        extra = {"handoff_level": rules.handoff_level, "accept_timeout_s": rules.accept_timeout_s,
                 "fallback_kind": rules.fallback_kind, "fallback_number": rules.fallback_number}
    assistant = await tx.assistants.create(
        name=name, numbers=patterns, engine=kind.kind, engine_address=kind.address,
        control_token_hash=token_hash, restricted_topics=topics, **extra)
    detail: dict[str, Any] = {"name": name, "numbers": patterns, "engine": str(kind)}
    if topics:
        detail["restricted_topics"] = [t.to_json() for t in topics]
    if hours is not None and not hours.always_open:
        assistant = await tx.assistants.set_hours(assistant.id, hours)
        detail.update(hours=hours.span_texts(), holidays=hours.holiday_texts())
    if menu is not None and menu.active:
        await _menu_leads_somewhere(tx, menu, name)
        assistant = await tx.assistants.set_menu(assistant.id, menu)
        detail["menu"] = menu.to_json()
    if announcements:
        assistant = await tx.assistants.set_announcements(assistant.id, announcements)
        detail["announcements"] = announcements
    await tx.audit.record(actor, "assistant_created", f"assistant:{assistant.id}", detail)
    return Issued(assistant, patterns, token)


async def edit(
    tx: Transaction, assistant_id: int, *, actor: str, numbers: Iterable[str] | None = None,
    engine: str | None = None, rules: Rules | None = None,
    topics: Sequence[Topic] | None = None, hours: Hours | None = None,
    menu: Menu | None = None, announcements: dict[str, str] | None = None,
) -> Issued:
    """Change what is given (``topics`` replaces the restricted topics, ``hours`` the
    business hours and holidays; the next call is judged by them). A call already
    up keeps its AI leg; the next call takes the new numbers and engine. Moving to an
    external engine issues a token (returned once), moving to the built-in one cuts the
    external engine's token off."""
    before = await tx.assistants.get(assistant_id)
    if before.removed_at is not None:
        raise AssistantRefused("removed", f"assistant {before.name} was removed")
    was = (await tx.assistants.numbers()).get(assistant_id, [])
    old = Engine(before.engine, before.engine_address)
    old_rules = view(before, was)
    changed: dict[str, list[Any]] = {}
    token = None
    if numbers is not None:
        patterns = check_numbers(numbers)
        await _numbers_free(tx, patterns, assistant_id)
        if patterns != was:
            await tx.assistants.set_numbers(assistant_id, patterns)
            changed["numbers"] = [was, patterns]
    if engine is not None:
        new = parse_engine(engine)
        if new != old:
            await tx.assistants.set_engine(assistant_id, new.kind, new.address)
            changed["engine"] = [str(old), str(new)]
            if new.kind is not old.kind:
                token, token_hash = _token_for(new)
                await tx.assistants.set_control_token_hash(assistant_id, token_hash)
    if rules is not None:
        after = view(await tx.assistants.set_handoff_rules(
            assistant_id, handoff_level=rules.handoff_level,
            accept_timeout_s=rules.accept_timeout_s, fallback_kind=rules.fallback_kind,
            fallback_number=rules.fallback_number), was)
        changed.update({k: [old_rules[k], after[k]] for k in RULE_KEYS
                        if old_rules[k] != after[k]})
    if topics is not None:
        was_topics = [t.to_json() for t in topics_of(before)]
        now_topics = [t.to_json() for t in topics]
        if now_topics != was_topics:
            await tx.assistants.set_restricted_topics(assistant_id, topics)
            # The whole rule before and after: the audit log is where a disputed
            # handoff is traced back to the phrase an admin wrote.
            changed["restricted_topics"] = [was_topics, now_topics]
    if hours is not None:
        was_hours = {"hours": list(before.hours or []), "holidays": list(before.holidays or [])}
        now_hours = {"hours": hours.span_texts(), "holidays": hours.holiday_texts()}
        if now_hours != was_hours:
            await tx.assistants.set_hours(assistant_id, hours)
            changed.update({k: [was_hours[k], now_hours[k]] for k in now_hours
                            if was_hours[k] != now_hours[k]})
    if menu is not None and menu.to_json() != (before.menu or {}):
        await _menu_leads_somewhere(tx, menu, before.name)
        was_menu = dict(before.menu or {})
        await tx.assistants.set_menu(assistant_id, menu)
        changed["menu"] = [was_menu, menu.to_json()]
    if announcements is not None and announcements != (before.announcements or {}):
        was_said = dict(before.announcements or {})
        await tx.assistants.set_announcements(assistant_id, announcements)
        changed["announcements"] = [was_said, announcements]
    await tx.audit.record(actor, "assistant_changed", f"assistant:{assistant_id}", changed)
    assistant = await tx.assistants.get(assistant_id)
    return Issued(assistant, await tx.assistants.numbers_of(assistant_id), token)


async def rotate_token(tx: Transaction, assistant_id: int, *, actor: str) -> str:
    """A new token, returned once; the old one is refused from this commit on (and an
    events socket opened with it is closed: web.ai_api.events)."""
    assistant = await tx.assistants.get(assistant_id)
    if assistant.removed_at is not None:
        raise AssistantRefused("removed", f"assistant {assistant.name} was removed")
    if assistant.engine is EngineKind.BUILTIN:
        raise AssistantRefused("builtin_token", f"assistant {assistant.name} runs on the "
                               "built-in receptionist, which holds its token itself; point it "
                               "at your engine (host:port) to get one")
    token = new_control_token()
    await tx.assistants.set_control_token_hash(assistant_id, hash_control_token(token))
    await tx.audit.record(actor, "assistant_token_rotated", f"assistant:{assistant_id}",
                          {"name": assistant.name})
    return token


async def disable(tx: Transaction, assistant_id: int, *, actor: str) -> Assistant:
    """Its numbers get routing.unknown_numbers' treatment from the next call; calls up
    go on, and its engine's token keeps working for them."""
    assistant = await tx.assistants.disable(assistant_id)
    await tx.audit.record(actor, "assistant_disabled", f"assistant:{assistant_id}",
                          {"name": assistant.name})
    return assistant


async def enable(tx: Transaction, assistant_id: int, *, actor: str) -> Assistant:
    assistant = await tx.assistants.enable(assistant_id)
    await tx.audit.record(actor, "assistant_enabled", f"assistant:{assistant_id}",
                          {"name": assistant.name})
    return assistant


async def remove(tx: Transaction, assistant_id: int, *, actor: str) -> Assistant:
    """Disabled, its numbers freed and its token refused; calls, their history and the
    audit lines keep its name."""
    assistant = await tx.assistants.remove(assistant_id)
    await tx.audit.record(actor, "assistant_removed", f"assistant:{assistant_id}",
                          {"name": assistant.name})
    return assistant


# What the admin page and the CLI call by name.
CHANGES: dict[str, Callable[..., Awaitable[Assistant]]] = {
    "disable": disable, "enable": enable, "remove": remove,
}

RULE_KEYS = ("handoff_level", "accept_timeout_s", "fallback_kind", "fallback_number")


def view(a: Assistant, numbers: Sequence[str]) -> dict[str, Any]:
    """An assistant as the admin page and `assistant list` show it (never its token)."""
    return {"id": a.id, "name": a.name, "numbers": list(numbers),
            "engine": a.engine_address or a.engine.value,
            "enabled": a.enabled, "handoff_level": a.handoff_level.value,
            "accept_timeout_s": a.accept_timeout_s, "fallback_kind": a.fallback_kind.value,
            "fallback_number": a.fallback_number or "",
            "restricted_topics": [t.to_json() for t in topics_of(a)],
            "hours": list(a.hours or []), "holidays": list(a.holidays or []),
            "menu_prompt": Menu.of(a).prompt, "menu": Menu.of(a).lines(),
            "announcements": dict(a.announcements or {})}


# ---- the built-in receptionist -------------------------------------------------------


class Seats(Protocol):
    """The built-in receptionist as the product seats it (handoff.receptionist)."""

    @property
    def tokens(self) -> dict[str, str]: ...

    async def serve(self, assistant: str, token: str) -> None: ...

    async def release(self, assistant: str) -> None: ...


async def seat_builtin(store: Store, receptionist: Seats) -> bool:
    """Have the receptionist answer for exactly the assistants on the built-in engine
    (not removed), each with a token of this process's own (it keeps the one it holds;
    a new seat gets a fresh one). True if it changed.

    Nothing is stored: this process's API accepts its receptionist's tokens (AiApi.seats),
    so the receptionists of several nodes on one database never replace each other's."""
    held = receptionist.tokens
    changed = False
    async with store.transaction() as tx:
        builtin = [a for a in await tx.assistants.listed() if a.engine is EngineKind.BUILTIN]
    fresh = {a.name: held.get(a.name) or new_control_token() for a in builtin}
    for name in set(held) - set(fresh):
        await receptionist.release(name)
        changed = True
    for name, token in fresh.items():
        if held.get(name) != token:
            await receptionist.serve(name, token)
            changed = True
    return changed
