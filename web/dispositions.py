"""Dispositions: adding, removing and listing them, and the one an agent picks for a
call at wrap-up.

Checked like pause reasons (web.pause_reasons: the same names, the same refusals), and
audited under the admin's login, or "cli", or the agent who picked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handoff.store import NotFound, Transaction
from handoff.store.models import Call, Disposition
from web.pause_reasons import PauseReasonRefused, checked_name, clash, id_named

KIND = "disposition"


def view(row: Disposition) -> dict[str, Any]:
    return {"id": row.id, "name": row.name}


async def add(tx: Transaction, changes: Mapping[str, Any], *, actor: str) -> Disposition:
    name = checked_name(changes.get("name"), KIND)
    clash(await tx.dispositions.listed(include_removed=True), name, KIND)
    row = await tx.dispositions.add(name)
    await tx.audit.record(actor, "disposition_added", f"disposition:{name}", {})
    return row


async def remove(tx: Transaction, disposition_id: int, *, actor: str) -> Disposition:
    await live(tx, disposition_id)
    row = await tx.dispositions.remove(disposition_id)
    await tx.audit.record(actor, "disposition_removed", f"disposition:{row.name}", {})
    return row


async def live(tx: Transaction, disposition_id: object) -> Disposition:
    """A disposition that may be picked now (PauseReasonRefused else)."""
    if isinstance(disposition_id, bool) or not isinstance(disposition_id, int):
        raise PauseReasonRefused("bad_request", "disposition_id is a disposition's id")
    try:
        row = await tx.dispositions.get(disposition_id)
    except NotFound:
        raise PauseReasonRefused("not_found", f"no disposition {disposition_id}") from None
    if row.removed_at is not None:
        raise PauseReasonRefused("not_found", f"disposition {row.name!r} was removed")
    return row


async def pick(tx: Transaction, call_id: str, disposition_id: object, *, actor: str) -> Call:
    """The agent's pick for a call they handled (the caller checks that), kept on the
    call and audited."""
    row = await live(tx, disposition_id)
    call = await tx.dispositions.record(call_id, row)
    await tx.audit.record(actor, "disposition_set", f"call:{call_id}",
                          {"disposition": row.name})
    return call


async def id_of(tx: Transaction, name: str) -> int:
    return await id_named(tx.dispositions, name, KIND)
