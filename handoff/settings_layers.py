"""The layers under typed settings, for any tree of frozen dataclasses: the environment
and the command line laid over a TOML file's tables, then each value converted to its
field's type, with errors that name the key and where it came from.
handoff.settings_sections holds Switchboard's own tree (the cluster's part in
handoff.settings_cluster); handoff.settings loads it and holds the checks a type alone
cannot express; the forms of the environment variables are described there.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "SWITCHBOARD_"
ENV_SHORT = {"SWITCHBOARD_ASTERISK": "asterisk.source", "SWITCHBOARD_CACHE": "asterisk.cache_dir"}


class SettingsError(ValueError):
    """A setting is unknown, malformed or out of range; the message names it."""


def apply_layers(
    root: type[Any], raw: dict[str, Any], environ: Mapping[str, str],
    overrides: Mapping[str, str],
) -> dict[str, str]:
    """Lay the environment, then the command line, over ``raw`` (the file's tables) for
    the settings tree ``root``; returns which variable or --set gave each key."""
    origins: dict[str, str] = {}
    for layer in (
        _env_layer(root, environ),
        [(_path(root, f"--set {dotted}", dotted.split(".")), value)
         for dotted, value in overrides.items()],
    ):
        # Sorted so that list entries are placed in index order (trunks 0, 1, … 10),
        # whatever order the environment lists them in.
        for path, value in sorted(layer, key=lambda item: item[0].order):
            _put(raw, path, value)
            origins[path.key] = path.source
    return origins


@dataclass(frozen=True)
class _Path:
    """Where one environment variable or --set lands in the settings tree."""

    source: str  # SWITCHBOARD_TRUNKS__0__HOST or --set trunks.0.host, for messages
    parts: tuple[str | int, ...]  # ("trunks", 0, "host")
    key: str  # trunks[0].host, as the file's errors name it
    hint: Any  # the setting's type

    @property
    def order(self) -> tuple[tuple[int, int | str], ...]:
        return tuple((0, p) if isinstance(p, int) else (1, p) for p in self.parts)


def _env_layer(root: type[Any], environ: Mapping[str, str]) -> list[tuple[_Path, str]]:
    """``SWITCHBOARD_<SECTION>__<KEY>``, and for a list of tables an index between
    (``SWITCHBOARD_TRUNKS__0__HOST``). Other ``SWITCHBOARD_`` names without ``__``
    belong to other tools (secrets for ``config render``, test and build knobs) unless
    they name a top-level setting or a short form."""
    top = {f.name for f in dataclasses.fields(root)}
    out: list[tuple[_Path, str]] = []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if name in ENV_SHORT:
            out.append((_path(root, name, ENV_SHORT[name].split(".")), value))
            continue
        rest = name.removeprefix(ENV_PREFIX).lower()
        if "__" in rest or rest in top:
            out.append((_path(root, name, rest.split("__")), value))
    return out


def _path(root: type[Any], source: str, parts: list[str]) -> _Path:
    """Follow ``parts`` through the settings' types; a wrong step names ``source``."""
    hint: Any = root
    key = ""
    steps: list[str | int] = []
    for part in parts:
        item = _list_item(hint)
        if item is not None and _is_table(item):
            if not (part.isascii() and part.isdigit()):
                raise SettingsError(f"{key}: a list of tables: give the entry's index first "
                                    f"({_entry_example(key)}) (from {source})")
            steps.append(int(part))
            key, hint = f"{key}[{int(part)}]", item
        elif _is_table(hint):
            if part not in {f.name for f in dataclasses.fields(hint)}:
                raise SettingsError(f"{_unknown(hint, f'{key}.' if key else '', part)} "
                                    f"(from {source})")
            steps.append(part)
            key, hint = f"{key}.{part}" if key else part, typing.get_type_hints(hint)[part]
        else:
            raise SettingsError(f"{key}: a single setting, not a section (from {source})")
    item = _list_item(hint)
    if item is not None and _is_table(item):
        raise SettingsError(f"{key}: a list of tables: set each entry's keys "
                            f"({_entry_example(key)}) (from {source})")
    if _is_table(hint):
        raise SettingsError(f"{key}: a section: set its keys one by one "
                            f"(SWITCHBOARD_{key.upper()}__<KEY>) (from {source})")
    return _Path(source, tuple(steps), key, hint)


def _entry_example(key: str) -> str:
    return f"SWITCHBOARD_{key.upper()}__0__NAME, --set {key}.0.name"


def _put(raw: dict[str, Any], path: _Path, value: str) -> None:
    """Set one value from the environment or command line over the file's, keeping the
    file's other entries: SWITCHBOARD_TRUNKS__0__HOST changes the first [[trunks]]
    table's host, an index one past the last adds a table."""
    item = _list_item(path.hint)
    # A list of plain values is written with commas (ulaw,alaw); "" is an empty list.
    stored: Any = ([v.strip() for v in value.split(",") if v.strip()]
                   if item is not None else value)
    try:
        _convert(path.hint, stored, path.key)  # so a bad value names its variable now
    except SettingsError as exc:
        raise SettingsError(f"{exc} (from {path.source})") from None
    target: Any = raw
    for depth, part in enumerate(path.parts[:-1]):
        below = path.parts[depth + 1]
        if isinstance(part, int):
            if part > len(target):
                raise SettingsError(f"{path.key}: number the entries from 0 without gaps; "
                                    f"there are {len(target)} before it (from {path.source})")
            if part == len(target):
                target.append({})
            target = target[part]
        else:
            target = target.setdefault(part, [] if isinstance(below, int) else {})
        if not isinstance(target, list if isinstance(below, int) else dict):
            kind = "list" if isinstance(below, int) else "table"
            raise SettingsError(f"{path.key}: the file's {part!r} is not the {kind} this "
                                f"sets a value in (from {path.source})")
    target[path.parts[-1]] = stored


def _is_table(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _list_item(hint: Any) -> Any:
    """The item type of ``tuple[X, ...]``, else None."""
    if typing.get_origin(hint) is not tuple:
        return None
    (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return item


def _unknown(cls: type[Any], prefix: str, key: str) -> str:
    known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
    return f"{prefix}{key}: unknown setting (known here: {known})"


def _build(cls: type[Any], raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise SettingsError(f"{prefix.rstrip('.') or 'config'}: expected a table of settings")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise SettingsError(_unknown(cls, prefix, key))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], f"{prefix}{f.name}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    if _is_table(hint):
        return _build(hint, value, key + ".")
    item = _list_item(hint)
    if item is not None:
        if not isinstance(value, list):
            form = f"[[{key}]] tables" if _is_table(item) else "[\"a\", \"b\"]"
            raise SettingsError(f"{key}: expected a list ({form})")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if typing.get_origin(hint) is types.UnionType:
        raise SettingsError(f"{key}: unsupported setting type")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise SettingsError(f"{key}: {value!r} is not true or false")
    if hint is int:
        if isinstance(value, bool):
            raise SettingsError(f"{key}: {value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{key}: {value!r} is not an integer") from None
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"{key}: {value!r} is not a string")
        return value
    raise SettingsError(f"{key}: unsupported setting type {hint!r}")
