"""Typed settings: defaults < TOML file < environment < command line.

Every value is checked at start-up and a wrong one stops Switchboard with a message
that names the key (``asterisk.sip_port: 'abc' is not an integer``), instead of a
half-started PBX. Secrets have no defaults; listeners bind 127.0.0.1 unless told
otherwise.

Environment: ``SWITCHBOARD_<SECTION>__<KEY>`` (e.g. ``SWITCHBOARD_SERVER__PORT=8081``),
plus the two short forms ``SWITCHBOARD_ASTERISK`` (asterisk.source) and
``SWITCHBOARD_CACHE`` (asterisk.cache_dir). Lists, so a container needs no file:

- a list of tables takes the entry's index after its name, one variable per key
  (``SWITCHBOARD_TRUNKS__0__NAME=itsp``, ``SWITCHBOARD_TRUNKS__0__HOST=192.0.2.10``);
  an index the file has changes that entry's keys, the next index adds one;
- a list of values is comma-separated (``…__CODECS=ulaw,alaw``; empty: no values).

Not one JSON value per list: a compose file then holds JSON inside YAML with two kinds
of quoting, one secret (a trunk's password) cannot come from its own variable, and an
error would name the whole list rather than the one variable that is wrong. The command
line takes the same paths with dots (``--set trunks.0.host=192.0.2.11``).

This module loads the settings and checks at start-up what a type alone cannot express.
Their shape, each key with its default and what it means, is in
handoff.settings_sections (the cluster's in handoff.settings_cluster); the rest of the
product imports them all from here.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handoff import tls
from handoff.logs import LOG_FORMATS
from handoff.settings_cluster import (
    ClusterNodeSettings,
    ClusterSettings,
    _check_dashboards,
    _check_node,
)
from handoff.settings_layers import SettingsError, _build, apply_layers
from handoff.settings_sections import (
    ACTIVE_CALLS_PER_CORE,
    AsteriskSettings,
    DatabaseSettings,
    DemoSettings,
    DeskSettings,
    RecordingsSettings,
    RoutingSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    TrunkSettings,
)
from handoff.trunks import TrunkAuth
from pbx.asterisk_config import check_max_calls, check_rtp_range
from pbx.config_values import ConfigValueError, check_host, check_name, check_port, check_realm

__all__ = [
    "ACTIVE_CALLS_PER_CORE",
    "AsteriskSettings",
    "ClusterNodeSettings",
    "ClusterSettings",
    "DatabaseSettings",
    "DemoSettings",
    "DeskSettings",
    "RecordingsSettings",
    "RoutingSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "TrunkSettings",
    "_build",
    "apply_layers",
    "check_origin",
    "load",
    "validate",
]


# ---- loading ------------------------------------------------------------------------


def load(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings from the layers; raises :class:`SettingsError`.

    A value from the environment or the command line that is wrong names where it came
    from (``… (from SWITCHBOARD_SERVER__PORT)``): in a container the variable is what the
    operator edits, not a key in a file they may not have.
    """
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {file}: {exc}") from exc
    origins = apply_layers(Settings, raw, os.environ if environ is None else environ,
                           overrides or {})
    settings: Settings = _build(Settings, raw, "")
    try:
        validate(settings)
    except SettingsError as exc:
        key = str(exc).partition(": ")[0]
        if key in origins:
            raise SettingsError(f"{exc} (from {origins[key]})") from exc
        raise
    return settings


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
        if settings.routing.max_active_calls:
            check_max_calls("routing.max_active_calls", settings.routing.max_active_calls)
        if settings.routing.max_active_calls > ast.call_limit:
            # Asterisk's own ceiling would refuse first, unseen by the log and metrics.
            raise ConfigValueError(
                "routing.max_active_calls", f"{settings.routing.max_active_calls} calls is "
                f"more than asterisk.max_calls lets in ({ast.call_limit})")
        for section, ports in (("asterisk", ast), ("demo", settings.demo)):
            if ports.rtp_start or ports.rtp_end:
                check_rtp_range(section, ports.rtp_start, ports.rtp_end,
                                max_calls=ast.call_limit)
        demo = settings.demo
        if (ast.rtp_start and demo.rtp_start and demo.rtp_start <= ast.rtp_end
                and ast.rtp_start <= demo.rtp_end):
            raise ConfigValueError("demo.rtp_start", "the demo carrier's RTP ports overlap "
                                   "the PBX's (asterisk.rtp_start-rtp_end)")
        _check_certificates(settings)
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
        if settings.cluster.nodes:
            settings.edge().validate()
            if settings.cluster.edge_https_port:
                _check_dashboards(settings.cluster, settings.dashboards())
        _check_node(settings.cluster)
        if settings.cluster.edge_wss_host:
            check_host("cluster.edge_wss_host", settings.cluster.edge_wss_host)
        unknown = settings.routing.unknown_numbers
        if unknown != "reject":
            try:
                check_name("routing.unknown_numbers", unknown)
            except ConfigValueError:
                raise ConfigValueError("routing.unknown_numbers", f"{unknown!r}: 'reject' or "
                                       "the name of the assistant that takes them") from None
    except ConfigValueError as exc:
        raise SettingsError(str(exc)) from exc
    sec = settings.security
    for key, value, top in (("block_after", sec.block_after, 10_000),
                            ("block_window_s", sec.block_window_s, 86_400),
                            ("block_for_s", sec.block_for_s, 30 * 86_400)):
        if not 0 <= value <= top:
            raise SettingsError(f"security.{key}: {value}: 0 to {top}")
    for i, network in enumerate(sec.never_block):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(f"security.never_block[{i}]: {network!r} is not an address "
                                "or a network (10.0.0.0/8)") from None
    if settings.desk.time_zone:
        try:
            zoneinfo.ZoneInfo(settings.desk.time_zone)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise SettingsError(f"desk.time_zone: {settings.desk.time_zone!r} is not a time "
                                "zone (an IANA name such as Europe/Paris, or empty for the "
                                "server's)") from None
    if not 0 <= settings.desk.wrap_up_s <= 600:
        raise SettingsError(f"desk.wrap_up_s: {settings.desk.wrap_up_s}: 0 to 600 seconds")
    if not 5 <= settings.desk.voicemail_max_s <= 600:
        raise SettingsError(f"desk.voicemail_max_s: {settings.desk.voicemail_max_s}: 5 to "
                            "600 seconds")
    if not 0 <= settings.recordings.keep_days <= 36500:
        raise SettingsError(f"recordings.keep_days: {settings.recordings.keep_days}: 0 (keep "
                            "them all) to 36500 days")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"log_level: {settings.log_level!r}: debug, info, warning or error")
    if settings.log_format not in LOG_FORMATS:
        raise SettingsError(f"log_format: {settings.log_format!r}: text or json")
    for i, proxy in enumerate(settings.server.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError(f"server.trusted_proxies[{i}]: {proxy!r} is not an address "
                                "or a network (192.0.2.10, 10.0.0.0/8, ::1)") from None
    _check_origin(settings.server, settings.cluster.dashboards_origin
                  if settings.cluster.node else "")
    url = settings.database.url
    if url and not url.startswith(("sqlite", "postgresql")):
        raise SettingsError(f"database.url: {url.split(':')[0]!r}: use sqlite or postgresql")


def check_origin(origin: str) -> str:
    """``origin`` as browsers send it in Origin (scheme://host[:port], no slash)."""
    parts = urllib.parse.urlsplit(origin)
    if (parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ValueError(f"server.public_origin: {origin!r}: a scheme, a host and perhaps a "
                         "port, nothing more (https://desk.example.com:8443)")
    return f"{parts.scheme}://{parts.netloc}"


def _check_origin(server: ServerSettings, edge_origin: str) -> None:
    """The dashboard accepts a WebSocket and a form only from its own origin (web.dashboard
    .guard), which is what agents' browsers send. Listening on every address, there is no
    one address to derive it from: browsers would send http://10.0.0.5:8080 and be
    refused, a dashboard that signs in and then does nothing, with nothing said why."""
    origin = server.public_origin
    if origin:
        try:
            check_origin(origin)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    elif server.host in ("0.0.0.0", "::", "[::]") and not edge_origin:
        # (A node whose edge serves the dashboards has the edge's origin.)
        raise SettingsError(f"server.public_origin: required when server.host is "
                            f"{server.host!r}: the address agents' browsers open "
                            "(https://desk.example.com:8443); the dashboard refuses requests "
                            "from any other origin. Or set server.host to that address.")


def _check_certificates(settings: Settings) -> None:
    """Both files of a pair or neither; each readable, the key the certificate's."""
    ast = settings.asterisk
    for section, cert, key in (("server", settings.server.tls_cert, settings.server.tls_key),
                               ("asterisk", ast.tls_cert, ast.tls_key),
                               ("cluster", settings.cluster.edge_tls_cert,
                                settings.cluster.edge_tls_key)):
        prefix = "edge_" if section == "cluster" else ""
        if bool(cert) != bool(key):
            missing = f"{prefix}tls_key" if cert else f"{prefix}tls_cert"
            raise ConfigValueError(f"{section}.{missing}",
                                   f"{prefix}tls_cert and {prefix}tls_key go together")
    if settings.server.tls_cert:
        tls.server_context("server", settings.server.tls_cert, settings.server.tls_key)
    # An Asterisk someone else runs reads its files on its own machine.
    if ast.tls_cert and not ast.external:
        tls.server_context("asterisk", ast.tls_cert, ast.tls_key)
    if ast.tls_port:
        check_port("asterisk.tls_port", ast.tls_port)
