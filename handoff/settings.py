"""Typed settings: defaults < TOML file < environment < command line.

Every value is checked at start-up and a wrong one stops Switchboard with a message
that names the key (``asterisk.sip_port: 'abc' is not an integer``), instead of a
half-started PBX. Secrets have no defaults; listeners bind 127.0.0.1 unless told
otherwise.

Environment: ``SWITCHBOARD_<SECTION>__<KEY>`` (e.g. ``SWITCHBOARD_SERVER__PORT=8081``),
plus the two short forms ``SWITCHBOARD_ASTERISK`` (asterisk.source) and
``SWITCHBOARD_CACHE`` (asterisk.cache_dir).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handoff.trunks import Trunk, TrunkAuth
from pbx.asterisk_config import check_max_calls, check_rtp_range, default_max_calls
from pbx.config_values import ConfigValueError, check_host, check_port, check_realm

ENV_PREFIX = "SWITCHBOARD_"
ENV_SHORT = {"SWITCHBOARD_ASTERISK": "asterisk.source", "SWITCHBOARD_CACHE": "asterisk.cache_dir"}


class SettingsError(ValueError):
    """A setting is unknown, malformed or out of range; the message names it."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # The browser origin the dashboard is served from, checked on every WebSocket
    # handshake and state-changing request; empty means http://host:port.
    public_origin: str = ""


@dataclass(frozen=True)
class DatabaseSettings:
    # SQLite in the data folder by default; PostgreSQL in production
    # (postgresql+psycopg://user:pass@host/db).
    url: str = ""


@dataclass(frozen=True)
class AsteriskSettings:
    source: str = "auto"
    mirror: str = "http://deb.debian.org/debian"
    cache_dir: str = ""
    bind_address: str = "127.0.0.1"
    media_address: str = "127.0.0.1"
    # The digest realm phones see in the PBX's challenges: the product's name unless the
    # site has its own (a domain such as sip.example.com).
    sip_realm: str = "switchboard"
    http_port: int = 8088
    sip_port: int = 5060
    ami_port: int = 5038
    # Simultaneous calls the PBX takes (Asterisk's maxcalls); 0: 50 per CPU core. The
    # RTP range below must carry them: 6 ports a call (caller, agent, and a second agent
    # or a supervisor, each an RTP and an RTCP port); 0: a free block that size.
    max_calls: int = 0
    rtp_start: int = 0
    rtp_end: int = 0
    country: str = "us"
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def call_limit(self) -> int:
        return self.max_calls or default_max_calls()


@dataclass(frozen=True)
class TrunkSettings:
    """A ``[[trunks]]`` table: shown read-only on the admin page, tried before the
    trunks the admin page and the CLI add (handoff.trunks)."""

    name: str = "carrier"
    host: str = "127.0.0.1"
    port: int = 5060
    # "ip": the carrier is recognised by host:port; "register": we register to it with
    # username and password (digest), and it challenges our calls with them too.
    auth: str = "ip"
    username: str = ""
    password: str = field(default="", repr=False)
    # The number the carrier shows for our calls out; from_user is its older name.
    caller_id: str = ""
    from_user: str = ""
    codecs: tuple[str, ...] = ("ulaw", "alaw")
    # Numbers allowed out through this trunk (e.g. "_0[1-7]XXXXXXXX"); none: nothing
    # goes out through it. International and premium-rate numbers also need these:
    allow_international: bool = False
    allow_premium: bool = False
    patterns: tuple[str, ...] = ()
    enabled: bool = True

    def trunk(self) -> Trunk:
        return Trunk(
            name=self.name, host=self.host, port=self.port, auth=TrunkAuth(self.auth),
            username=self.username, password=self.password,
            caller_id=self.caller_id or self.from_user, codecs=self.codecs,
            patterns=self.patterns, allow_international=self.allow_international,
            allow_premium=self.allow_premium, enabled=self.enabled, source="settings",
        )


@dataclass(frozen=True)
class DemoSettings:
    # The demo set-up `make run` gives a new user: a built-in carrier Asterisk that
    # places test calls, demo agents and the reference receptionist.
    enabled: bool = True
    test_caller: bool = True
    # The demo carrier's RTP ports: it places the calls the PBX takes, so its range must
    # carry asterisk.max_calls too; 0: a free block that size.
    rtp_start: int = 0
    rtp_end: int = 0


@dataclass(frozen=True)
class DeskSettings:
    # Seconds an available agent spends in wrap-up after their part of a call (notes,
    # follow-up) before the next card; 0 turns it off. The agent can end it early.
    wrap_up_s: int = 15


@dataclass(frozen=True)
class Settings:
    data_dir: str = "var"
    log_level: str = "info"
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    desk: DeskSettings = field(default_factory=DeskSettings)
    trunks: tuple[TrunkSettings, ...] = ()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_path / 'switchboard.db'}"

    @property
    def origin(self) -> str:
        return self.server.public_origin or f"http://{self.server.host}:{self.server.port}"


# ---- loading ------------------------------------------------------------------------


def load(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings from the layers; raises :class:`SettingsError`."""
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {file}: {exc}") from exc
    for dotted, value in _env_layer(os.environ if environ is None else environ).items():
        _put(raw, dotted, value, "environment")
    for dotted, value in (overrides or {}).items():
        _put(raw, dotted, value, "command line")
    settings: Settings = _build(Settings, raw, "")
    validate(settings)
    return settings


def _env_layer(environ: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in environ.items():
        if name in ENV_SHORT:
            out[ENV_SHORT[name]] = value
        elif name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("__")
            out[f"{section}.{key}"] = value
        elif name.startswith(ENV_PREFIX) and name.removeprefix(ENV_PREFIX).lower() in (
            "data_dir",
            "log_level",
        ):
            out[name.removeprefix(ENV_PREFIX).lower()] = value
    return out


def _put(raw: dict[str, Any], dotted: str, value: str, layer: str) -> None:
    parts = dotted.split(".")
    if len(parts) > 2 or not all(parts):
        raise SettingsError(f"{dotted} ({layer}): expected section.key or key")
    target = raw
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise SettingsError(f"{dotted} ({layer}): {part} is not a section")
        target = node
    target[parts[-1]] = value


def _build(cls: type[Any], raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise SettingsError(f"{prefix.rstrip('.') or 'config'}: expected a table of settings")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            hint = ", ".join(sorted(known))
            raise SettingsError(f"{prefix}{key}: unknown setting (known here: {hint})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], f"{prefix}{f.name}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not isinstance(value, list):
            raise SettingsError(f"{key}: expected a list ([[{key}]] tables)")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is types.UnionType:
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


def validate(settings: Settings) -> None:
    """Range and shape checks that a type alone cannot express."""
    try:
        check_host("server.host", settings.server.host)
        check_port("server.port", settings.server.port)
        ast = settings.asterisk
        check_host("asterisk.bind_address", ast.bind_address)
        check_host("asterisk.media_address", ast.media_address)
        check_realm("asterisk.sip_realm", ast.sip_realm)
        for key in ("http_port", "sip_port", "ami_port"):
            port = getattr(ast, key)
            if port != 0:
                check_port(f"asterisk.{key}", port)
        if ast.max_calls:
            check_max_calls("asterisk.max_calls", ast.max_calls)
        for section, ports in (("asterisk", ast), ("demo", settings.demo)):
            if ports.rtp_start or ports.rtp_end:
                check_rtp_range(section, ports.rtp_start, ports.rtp_end,
                                max_calls=ast.call_limit)
        demo = settings.demo
        if (ast.rtp_start and demo.rtp_start and demo.rtp_start <= ast.rtp_end
                and ast.rtp_start <= demo.rtp_end):
            raise ConfigValueError("demo.rtp_start", "the demo carrier's RTP ports overlap "
                                   "the PBX's (asterisk.rtp_start-rtp_end)")
        if bool(ast.tls_cert) != bool(ast.tls_key):
            raise ConfigValueError("asterisk.tls_key", "tls_cert and tls_key go together")
        if ast.country not in ("us", "gb", "de", "fr"):
            raise ConfigValueError("asterisk.country", f"{ast.country!r}: one of us, gb, de, fr")
        names: set[str] = set()
        for i, trunk in enumerate(settings.trunks):
            if trunk.auth not in tuple(TrunkAuth):
                raise ConfigValueError(f"trunks[{i}].auth", f"{trunk.auth!r}: ip or register")
            if trunk.caller_id and trunk.from_user:
                raise ConfigValueError(f"trunks[{i}].from_user", "from_user is the older "
                                       "name of caller_id: keep one")
            trunk.trunk().check(f"trunks[{i}]")
            if trunk.name in names:
                raise ConfigValueError(f"trunks[{i}].name", f"{trunk.name!r} is used twice")
            names.add(trunk.name)
    except ConfigValueError as exc:
        raise SettingsError(str(exc)) from exc
    if not 0 <= settings.desk.wrap_up_s <= 600:
        raise SettingsError(f"desk.wrap_up_s: {settings.desk.wrap_up_s}: 0 to 600 seconds")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"log_level: {settings.log_level!r}: debug, info, warning or error")
    url = settings.database.url
    if url and not url.startswith(("sqlite", "postgresql")):
        raise SettingsError(f"database.url: {url.split(':')[0]!r}: use sqlite or postgresql")
