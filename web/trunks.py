"""Trunks: adding, changing and removing those the store keeps.

The admin page and `switchboard trunk` share these, so both check a trunk the same way
and write the same audit lines (under the admin's login, or "cli"). The settings file's
trunks (and the demo carrier's) are shown beside them but changed only where they come
from; a stored trunk cannot take one of their names.

A trunk's password is a carrier's secret: it is never in a response, a listing, a log
line or an audit line. Changing it is recorded as "password changed", nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from handoff.store import NotFound, Transaction
from handoff.store.models import TrunkRecord
from handoff.store.trunks_repo import as_trunk
from handoff.trunks import Trunk, TrunkAuth
from pbx.config_values import ConfigValueError
from pbx.trunk_status import TrunkStatus

# What an admin may set; everything else of a Trunk is the product's.
EDITABLE = ("name", "host", "port", "auth", "username", "password", "caller_id", "codecs",
            "patterns", "allow_international", "allow_premium", "enabled")


class TrunkRefused(Exception):
    """Bad input or a clash: ``error`` is the API's error code, the message its reason."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def _words(value: Any, key: str) -> tuple[str, ...]:
    """A list, or text separated by commas or spaces (a form field, a CLI option)."""
    if isinstance(value, str):
        return tuple(w for w in value.replace(",", " ").split() if w)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise TrunkRefused("bad_request", f"{key}: a list of words")


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise TrunkRefused("bad_request", f"{key}: true or false")


def _port(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise TrunkRefused("bad_request", "port: a number, 1 to 65535")


def build(changes: Mapping[str, Any], base: Trunk | None = None) -> Trunk:
    """The trunk ``changes`` make of ``base`` (a new trunk when None), checked.

    An empty or absent password keeps the one there is; a trunk that stops registering
    loses its account. TrunkRefused names the first field that is wrong.
    """
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise TrunkRefused("bad_request", f"unknown field(s) {', '.join(unknown)}; known: "
                           + ", ".join(EDITABLE))
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        if key == "port":
            values[key] = _port(value)
        elif key in ("codecs", "patterns"):
            values[key] = _words(value, key)
        elif key in ("allow_international", "allow_premium", "enabled"):
            values[key] = _flag(value, key)
        elif key == "auth":
            try:
                values[key] = TrunkAuth(str(value))
            except ValueError:
                raise TrunkRefused("bad_request", "auth: ip or register") from None
        elif not isinstance(value, str):
            raise TrunkRefused("bad_request", f"{key}: text")
        else:
            values[key] = value.strip()
    if not values.get("password"):
        values.pop("password", None)
    if base is None:
        missing = [k for k in ("name", "host") if not values.get(k)]
        if missing:
            raise TrunkRefused("bad_request", f"{', '.join(missing)}: required")
        trunk = Trunk(**values)
    else:
        trunk = replace(base, **values)
    if trunk.auth is TrunkAuth.IP:
        trunk = replace(trunk, username="", password="")
    try:
        trunk.check("trunk")
    except ConfigValueError as exc:
        raise TrunkRefused("bad_request", str(exc)) from None
    return trunk


def changed_fields(before: Trunk | None, after: Trunk | None) -> dict[str, Any]:
    """What an audit line says changed: old and new values, the password only by name."""
    out: dict[str, Any] = {}
    for f in fields(Trunk):
        if f.name not in EDITABLE:
            continue
        old = getattr(before, f.name) if before else None
        new = getattr(after, f.name) if after else None
        if old == new:
            continue
        if f.name == "password":
            out["password"] = "changed" if new else "removed"
        else:
            out[f.name] = [_plain(old), _plain(new)]
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def view(trunk: Trunk, trunk_id: int | None = None,
         status: TrunkStatus | None = None) -> dict[str, Any]:
    """A trunk as the admin page and the CLI show it: everything but the password."""
    return {
        "id": trunk_id, "name": trunk.name, "source": trunk.source,
        "read_only": trunk.source != "store", "host": trunk.host, "port": trunk.port,
        "auth": trunk.auth.value, "username": trunk.username,
        "password_set": bool(trunk.password), "caller_id": trunk.caller_id,
        "codecs": list(trunk.codecs), "patterns": list(trunk.patterns),
        "allow_international": trunk.allow_international,
        "allow_premium": trunk.allow_premium, "enabled": trunk.enabled,
        "status": status.state.value if status else "unknown",
        "last_error": status.last_error if status else "",
    }


@dataclass(frozen=True, slots=True)
class Listed:
    trunk: Trunk
    trunk_id: int | None  # None: the settings file's or the demo's


async def listing(tx: Transaction, fixed: Sequence[Trunk]) -> list[Listed]:
    """Every trunk in the order calls out try them: the fixed ones, then the store's."""
    return [Listed(trunk, trunk_id) for trunk, trunk_id in await tx.trunks.in_order(fixed)]


async def _check_name(tx: Transaction, name: str, fixed_names: Iterable[str],
                      trunk_id: int | None = None) -> None:
    if name in set(fixed_names):
        raise TrunkRefused("name_taken", f"{name!r} is a trunk of the settings file; change "
                           "it there, or give this one another name")
    other = await tx.trunks.by_name(name)
    if other is not None and other.id != trunk_id:
        raise TrunkRefused("name_taken", f"there is already a trunk {name!r}")


async def add(tx: Transaction, changes: Mapping[str, Any], *, actor: str,
              fixed_names: Iterable[str]) -> TrunkRecord:
    trunk = build(changes)
    await _check_name(tx, trunk.name, fixed_names)
    row = await tx.trunks.create(trunk)
    await tx.audit.record(actor, "trunk_added", f"trunk:{trunk.name}",
                          changed_fields(None, trunk))
    return row


async def _stored(tx: Transaction, trunk_id: int) -> TrunkRecord:
    try:
        return await tx.trunks.get(trunk_id)
    except NotFound:
        raise TrunkRefused("not_found", f"no stored trunk {trunk_id}") from None


async def edit(tx: Transaction, trunk_id: int, changes: Mapping[str, Any], *, actor: str,
               fixed_names: Iterable[str]) -> TrunkRecord:
    before = as_trunk(await _stored(tx, trunk_id))
    after = build(changes, before)
    await _check_name(tx, after.name, fixed_names, trunk_id)
    row = await tx.trunks.update(trunk_id, after)
    await tx.audit.record(actor, "trunk_changed", f"trunk:{after.name}",
                          changed_fields(before, after))
    return row


async def remove(tx: Transaction, trunk_id: int, *, actor: str) -> TrunkRecord:
    await _stored(tx, trunk_id)
    row = await tx.trunks.delete(trunk_id)
    await tx.audit.record(actor, "trunk_removed", f"trunk:{row.name}", {})
    return row


async def id_of(tx: Transaction, name: str) -> int:
    row = await tx.trunks.by_name(name)
    if row is None:
        raise TrunkRefused("not_found", f"no stored trunk {name!r}")
    return row.id
