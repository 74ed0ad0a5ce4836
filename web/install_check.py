"""`switchboard config check` past the settings: the database of an installation, and
what Asterisk would be given from it, checked before anything is started.

Each check is a named function over one :class:`Installation` (the settings, what the
database holds, the PBX configuration rendered from both) that yields its findings; a
new one is a function under ``@check("name")``. The database is only read: a missing
SQLite file is not created, a database behind the migrations is not upgraded (the first
``switchboard run`` or ``switchboard user add`` does both).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from handoff.agents import AgentRole
from handoff.assistants import EngineKind
from handoff.settings import Settings
from handoff.store import Store, create_store_engine, migrations, pending_migrations
from handoff.store.models import Agent, Assistant
from handoff.trunks import Trunk
from pbx import dashboards_edge
from pbx.asterisk_config import InboundRoute, InstanceSpec, SipAgent, render
from pbx.config_values import ConfigValueError
from pbx.installation import redact_url
from pbx.kamailio_config import CONFIG_FILE, KamailioUnavailable, check_syntax, tls_files
from pbx.kamailio_config import render as render_edge
from web.telephony import routes_and_agents


class Severity(enum.StrEnum):
    # The installation cannot start or a call would fail: the command exits non-zero.
    ERROR = "error"
    # It runs, but something is missing that a person will notice.
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class Database:
    """What the installation's database holds, read once."""

    url: str  # without its password, for messages
    agents: Sequence[Agent] = ()
    assistants: Sequence[Assistant] = ()
    # What the PBX would be given: the numbers assistants answer, enabled people's phones.
    routes: tuple[InboundRoute, ...] = ()
    endpoints: tuple[SipAgent, ...] = ()
    # Every assistant's numbers, by assistant id.
    numbers: dict[int, list[str]] = field(default_factory=dict)
    # Every trunk, the settings file's and the stored ones, in the order calls out try them.
    trunks: Sequence[Trunk] = ()


@dataclass(frozen=True)
class Installation:
    settings: Settings
    # None: there is no database yet or it could not be read (a finding says which).
    database: Database | None
    # The PBX's configuration with the database's numbers and people in it.
    spec: InstanceSpec


@dataclass
class Report:
    database: Database | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)


Check = Callable[[Installation], Iterator[tuple[Severity, str]]]
# The checks, in the order they are reported.
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


def examine(settings: Settings, spec: InstanceSpec) -> Report:
    """Every check on the installation: ``spec`` is the PBX configuration the settings
    render, to which the database's numbers and people are added."""
    report = Report()
    report.database = _read_database(settings, report)
    installation = Installation(settings, report.database, spec_with_database(
        spec, report.database))
    for name, fn in CHECKS.items():
        report.findings.extend(Finding(name, severity, message)
                               for severity, message in fn(installation))
    return report


def spec_with_database(spec: InstanceSpec, database: Database | None) -> InstanceSpec:
    """The PBX configuration as `run` would render it with this database."""
    if database is None:
        return spec
    return dataclasses.replace(spec, routes=database.routes, agents=database.endpoints)


def _read_database(settings: Settings, report: Report) -> Database | None:
    """The database's contents, or None with a finding saying why they were not read."""
    url = settings.database_url
    shown = redact_url(url)

    def finding(severity: Severity, message: str) -> None:
        report.findings.append(Finding("database", severity, f"{shown}: {message}"))

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        # Connecting would create an empty file; the check leaves the machine as it was.
        finding(Severity.WARNING, "no database yet (not created by this check); the first "
                "`switchboard run` or `switchboard user add` creates it")
        return None
    try:
        return asyncio.run(_read(url, shown, finding,
                                 [t.trunk() for t in settings.trunks]))
    except (SQLAlchemyError, OSError) as exc:
        finding(Severity.ERROR, f"cannot be read: {exc.__class__.__name__}: "
                f"{str(exc).strip().splitlines()[0]}")
        return None


async def _read(url: str, shown: str, finding: Callable[[Severity, str], None],
                settings_trunks: Sequence[Trunk]) -> Database | None:
    engine = create_store_engine(url)
    try:
        pending = await pending_migrations(engine)
        if pending is None:
            finding(Severity.ERROR, "written by a newer Switchboard (its schema revision "
                    "is unknown here); run that version, or restore a backup")
            return None
        if pending:
            done = ("no tables yet" if pending == migrations()
                    else f"{len(pending)} schema migrations behind ({', '.join(pending)})")
            finding(Severity.WARNING, f"{done}; the next `switchboard run` brings it up to "
                    "date (its contents are checked after that)")
            return None
        store = Store(engine)
        async with store.transaction() as tx:
            agents = await tx.agents.all()
            assistants = await tx.assistants.listed()
            numbers = await tx.assistants.numbers()
            trunks = [t for t, _ in await tx.trunks.in_order(settings_trunks)]
        routes, endpoints = await routes_and_agents(store)
        return Database(shown, agents, assistants, routes, endpoints, numbers, trunks)
    finally:
        await engine.dispose()


# ---- the checks -----------------------------------------------------------------------


@check("pbx_configuration")
def _pbx_configuration(installation: Installation) -> Iterator[tuple[Severity, str]]:
    # The settings alone rendered already; what can fail now comes from the database
    # (a number pattern, a person's SIP account clashing with a trunk's name).
    try:
        render(installation.spec)
    except ConfigValueError as exc:
        yield Severity.ERROR, (f"the database's numbers or people make a configuration "
                               f"Asterisk would refuse: {exc}")


@check("cluster_edge")
def _cluster_edge(installation: Installation) -> Iterator[tuple[Severity, str]]:
    settings = installation.settings
    if not settings.cluster.nodes:
        return
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        yield Severity.WARNING, ("cluster.nodes are set but the store is SQLite: each node "
                                 "keeps its own cards and people (set database.url to the "
                                 "PostgreSQL they all share)")
    edge = settings.edge()
    if edge.wss_port and not settings.cluster.node:
        # The edge's machine (no node here): the browsers' certificate `config edge`
        # copies for Kamailio. A node's settings name it too, but it is not on the node.
        try:
            tls_files(edge)
        except ConfigValueError as exc:
            yield Severity.ERROR, f"the edge's WebSocket: {exc}"
    # Kamailio's own check of the files `config edge` would write.
    with tempfile.TemporaryDirectory(prefix="switchboard-edge-") as folder:
        (Path(folder) / CONFIG_FILE).write_text(render_edge(edge)[CONFIG_FILE])
        try:
            check_syntax(Path(folder) / CONFIG_FILE)
        except KamailioUnavailable as exc:
            yield Severity.WARNING, f"the edge's files are not checked here: {exc}"
        except ValueError as exc:
            yield Severity.ERROR, str(exc)


@check("cluster_dashboards")
def _cluster_dashboards(installation: Installation) -> Iterator[tuple[Severity, str]]:
    """With the agents' desks at the edge (cluster.edge_https_port): on a node, that its
    origin is the edge's; on the edge's machine, HAProxy's own check of the files
    `switchboard edge dashboards` would write (its certificate included)."""
    settings = installation.settings
    if not (settings.cluster.nodes and settings.cluster.edge_https_port):
        return
    if settings.cluster.node:
        if settings.origin_not_the_edge_s:
            yield Severity.WARNING, settings.origin_not_the_edge_s
        return
    with tempfile.TemporaryDirectory(prefix="switchboard-dashboards-") as folder:
        spec = dataclasses.replace(settings.dashboards(), config_dir=folder, run_dir=folder)
        try:
            dashboards_edge.write_files(spec, Path(folder))
            dashboards_edge.check_syntax(Path(folder) / dashboards_edge.CONFIG_FILE)
        except dashboards_edge.HaproxyUnavailable as exc:
            yield Severity.WARNING, f"the edge's dashboards' file is not checked here: {exc}"
        except ValueError as exc:  # a certificate missing, or haproxy -c refused it
            yield Severity.ERROR, f"the desks at the edge: {exc}"


@check("agents_without_phones")
def _agents_without_phones(installation: Installation) -> Iterator[tuple[Severity, str]]:
    db = installation.database
    for agent in db.agents if db else ():
        if agent.enabled and not (agent.sip_user and agent.sip_password):
            # Every enabled person's phone is a PJSIP endpoint with digest auth; without
            # the account their browser or desk phone cannot register, so no card rings.
            yield Severity.ERROR, (f"{agent.login} has no SIP account for their phone; "
                                   f"remove them and add them again (`switchboard user "
                                   f"remove {agent.login}`, `user add`)")


@check("people_without_passwords")
def _people_without_passwords(installation: Installation) -> Iterator[tuple[Severity, str]]:
    db = installation.database
    for agent in db.agents if db else ():
        if agent.enabled and agent.password_hash is None:
            yield Severity.WARNING, (f"{agent.login} cannot sign in yet: "
                                     f"`switchboard user passwd {agent.login}`")


def _real_installation(installation: Installation) -> Database | None:
    """The database of an installation that has only what it was given (the demo adds
    its people, its carrier and its assistant at start); None for the demo."""
    return None if installation.settings.demo.enabled else installation.database


@check("nobody_to_sign_in")
def _nobody_to_sign_in(installation: Installation) -> Iterator[tuple[Severity, str]]:
    db = _real_installation(installation)
    if db is None:
        return
    enabled = [a for a in db.agents if a.enabled]
    if not any(a.role is AgentRole.ADMIN for a in enabled):
        yield Severity.WARNING, ("nobody can manage this installation (no enabled admin): "
                                 "`switchboard user add admin --role admin`")
    if not enabled:
        yield Severity.WARNING, ("nobody can take a handoff (no enabled person): "
                                 "`switchboard user add LOGIN --role agent`")



# ---- output ---------------------------------------------------------------------------


def render_text(report: Report, files: Sequence[str]) -> str:
    lines = [f"settings ok; rendered {len(files)} Asterisk files: {', '.join(sorted(files))}"]
    db = report.database
    if db is not None:
        people = "1 person" if len(db.agents) == 1 else f"{len(db.agents)} people"
        lines.append(f"database {db.url}: {people}, {_count(len(db.assistants), 'assistant')}")
    lines += [f"{f.severity.value:<8} {f.check}: {f.message}" for f in report.findings]
    errors = sum(f.severity is Severity.ERROR for f in report.findings)
    warnings = len(report.findings) - errors
    lines.append(f"installation ok ({_count(warnings, 'warning')})" if report.ok
                 else f"{_count(errors, 'error')}, {_count(warnings, 'warning')}: "
                 "not ready to run")
    return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def render_json(report: Report, files: Sequence[str]) -> str:
    db = report.database
    return json.dumps({
        "ok": report.ok,
        "settings": {"asterisk_files": sorted(files)},
        "database": None if db is None else {
            "url": db.url, "people": len(db.agents), "assistants": len(db.assistants)},
        "findings": [dataclasses.asdict(f) for f in report.findings],
    }, indent=2)


@check("assistants_without_numbers")
def _assistants_without_numbers(installation: Installation) -> Iterator[tuple[Severity, str]]:
    db = installation.database
    if db is None:
        return
    default = installation.settings.routing.unknown_numbers
    for assistant in db.assistants:
        if assistant.enabled and not db.numbers.get(assistant.id) and assistant.name != default:
            # Nothing routes to it: it answers no call unless it takes the unknown ones.
            yield Severity.WARNING, (
                f"assistant {assistant.name} answers no number: `switchboard assistant "
                f"edit {assistant.name} --number N`, or set routing.unknown_numbers = "
                f"\"{assistant.name}\" for it to take the numbers nobody answers")


@check("assistants_without_engines")
def _assistants_without_engines(installation: Installation) -> Iterator[tuple[Severity, str]]:
    db = installation.database
    for assistant in db.assistants if db else ():
        if (assistant.enabled and assistant.engine is EngineKind.AUDIOSOCKET
                and not assistant.engine_address):
            yield Severity.ERROR, (
                f"assistant {assistant.name} has no engine address: its calls are refused; "
                f"`switchboard assistant edit {assistant.name} --engine HOST:PORT`")


@check("unknown_numbers_assistant")
def _unknown_numbers_assistant(installation: Installation) -> Iterator[tuple[Severity, str]]:
    db = installation.database
    default = installation.settings.routing.unknown_numbers
    if db is None or default == "reject":
        return
    if not any(a.name == default and a.enabled for a in db.assistants):
        yield Severity.ERROR, (
            f"routing.unknown_numbers names {default!r}, which is no enabled assistant: "
            "calls to numbers nobody answers would be refused; add it, enable it, or set "
            "\"reject\"")


@check("trunks_without_allowed_patterns")
def _trunks_without_allowed_patterns(
    installation: Installation,
) -> Iterator[tuple[Severity, str]]:
    db = installation.database
    trunks = db.trunks if db else [t.trunk() for t in installation.settings.trunks]
    for trunk in trunks:
        if trunk.enabled and not trunk.patterns:
            # A trunk with no patterns lets nothing out (toll fraud is refused by
            # default), so fallback numbers and call-backs cannot use it.
            where = ("the settings file" if trunk.source == "settings"
                     else f"`switchboard trunk edit {trunk.name} --allow PATTERN`")
            yield Severity.WARNING, (
                f"trunk {trunk.name} allows no number out: fallback numbers and call-backs "
                f"cannot use it (give it patterns in {where})")


@check("no_trunks")
def _no_trunks(installation: Installation) -> Iterator[tuple[Severity, str]]:
    db = _real_installation(installation)
    if db is not None and not any(t.enabled for t in db.trunks):
        yield Severity.WARNING, ("no trunk: no call can come in or go out; add one with "
                                 "`switchboard trunk add` or [[trunks]] in the settings")
