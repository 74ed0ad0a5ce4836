"""Pause reasons: adding, removing and listing them, and the one an agent chooses.

The admin page and `switchboard pause-reason` share these, so both check a reason the
same way and write the same audit lines (under the admin's login, or "cli"). The desk
offers the reasons listed at the moment it is loaded.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from handoff.store import NotFound, Transaction
from handoff.store.models import Disposition, PauseReason
from web.people import PersonRefused

MAX_NAME = 40


def name_rule(kind: str) -> str:
    return f"a {kind}'s name is 1-{MAX_NAME} characters, with no control characters"


class PauseReasonRefused(PersonRefused):
    """Bad input or a clash, as for a person: ``error`` is the API's error code."""


def view(row: PauseReason) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "productive": row.productive}


def checked_name(value: object, kind: str = "pause reason") -> str:
    """A name for the admin's lists (pause reasons, dispositions): people's words
    ("Lunch", "Formation"), shown on every desk and the board: any script, but nothing
    that could break a line or a table cell."""
    name = str(value or "").strip()
    if not 0 < len(name) <= MAX_NAME or any(
            unicodedata.category(ch).startswith("C") for ch in name):
        raise PauseReasonRefused("bad_request", name_rule(kind))
    return name


def clash(rows: Iterable[PauseReason | Disposition], name: str, kind: str) -> None:
    """"Lunch" and "lunch" would read as one on the board and two in the figures."""
    for row in rows:
        if row.name.casefold() == name.casefold():
            raise PauseReasonRefused("name_taken", f"there is already a {kind} {row.name!r} "
                                     f"(a removed {kind}'s name stays taken)")


async def add(tx: Transaction, changes: Mapping[str, Any], *, actor: str) -> PauseReason:
    name = checked_name(changes.get("name"))
    productive = changes.get("productive")
    if not isinstance(productive, bool):
        raise PauseReasonRefused("bad_request", "productive is true (work off the phone, "
                                 "such as training) or false (a break)")
    clash(await tx.pause_reasons.listed(include_removed=True), name, "pause reason")
    row = await tx.pause_reasons.add(name, productive=productive)
    await tx.audit.record(actor, "pause_reason_added", f"pause_reason:{name}",
                          {"productive": productive})
    return row


async def remove(tx: Transaction, reason_id: int, *, actor: str) -> PauseReason:
    row = await live(tx, reason_id)
    row = await tx.pause_reasons.remove(reason_id)
    await tx.audit.record(actor, "pause_reason_removed", f"pause_reason:{row.name}",
                          {"productive": row.productive})
    return row


async def live(tx: Transaction, reason_id: object) -> PauseReason:
    """A reason that may be chosen now: listed, not removed (PauseReasonRefused else)."""
    if isinstance(reason_id, bool) or not isinstance(reason_id, int):
        raise PauseReasonRefused("bad_request", "pause_reason_id is a pause reason's id")
    try:
        row = await tx.pause_reasons.get(reason_id)
    except NotFound:
        raise PauseReasonRefused("not_found", f"no pause reason {reason_id}") from None
    if row.removed_at is not None:
        raise PauseReasonRefused("not_found", f"pause reason {row.name!r} was removed")
    return row


class _Named(Protocol):
    async def by_name(self, name: str) -> PauseReason | Disposition | None: ...


async def id_named(rows: _Named, name: str, kind: str) -> int:
    """The id of the listed row called ``name`` (the command line names rows)."""
    row = await rows.by_name(name)
    if row is None or row.removed_at is not None:
        raise PauseReasonRefused("not_found", f"no {kind} {name!r}")
    return row.id


async def id_of(tx: Transaction, name: str) -> int:
    return await id_named(tx.pause_reasons, name, "pause reason")
