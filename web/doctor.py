"""`switchboard doctor`: what this machine has, for a person (text) or a script (--json)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.exc import SQLAlchemyError

from handoff.settings import Settings
from handoff.store import Store, create_store_engine
from handoff.store.models import Node
from handoff.store.transitions import utc_now
from pbx import rootfs, runtime
from pbx.ari import basic_auth_header
from pbx.dashboards_edge import HaproxyUnavailable, nodes_up
from pbx.edge import Edge, NodeState, registered_phones, sip_options
from pbx.installation import redact_url
from pbx.kamailio_config import KamailioUnavailable


@dataclass
class Report:
    asterisk: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] = field(default_factory=dict)
    browser: dict[str, Any] = field(default_factory=dict)
    dashboard: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    # [cluster]: the SIP edge and each node (empty without nodes).
    cluster: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def state_file(settings: Settings) -> Path:
    """Written by `switchboard run` while it runs: where its Asterisk and dashboard are."""
    return settings.data_path / "run" / "switchboard.json"


def read_state(settings: Settings) -> dict[str, Any] | None:
    """What the state file says, if there is one to read (its run may be gone)."""
    try:
        state: dict[str, Any] = json.loads(state_file(settings).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state


def read_running(settings: Settings) -> dict[str, Any] | None:
    state = read_state(settings)
    if state is None:
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None  # left by a run that died; not running
    return state


async def _ari_info(url: str, user: str, password: str) -> dict[str, Any] | None:
    timeout = aiohttp.ClientTimeout(total=3)
    headers = basic_auth_header(user, password)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{url}/asterisk/info", headers=headers) as resp,
        ):
            if resp.status != 200:
                return None
            info: dict[str, Any] = await resp.json()
            return info
    except (aiohttp.ClientError, TimeoutError):
        return None


def _version_of(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


async def examine_cluster(settings: Settings, report: Report) -> None:
    """The edge (Kamailio's version; which nodes its dispatcher sends calls to and which
    desk phones are registered to it, when its control socket is on this machine) and
    every node: whether its SIP answers an
    OPTIONS from here, and its version where it can be known. A node's ARI listens on
    its own loopback, so only this machine's node tells its version (report.asterisk);
    the others' SIP names no software."""
    spec = settings.cluster.edge()
    kamailio = await asyncio.to_thread(_version_of, ["kamailio", "-v"])
    edge: dict[str, Any] = {"listen": f"{spec.listen_address}:{spec.port}",
                            "version": kamailio.removeprefix("version: ") if kamailio else None}
    dispatch: dict[str, NodeState] = {}
    try:
        dispatch = {state.name: state for state in await Edge(spec, Path(spec.config_dir)).nodes()}
        edge["state"] = "running"
        # The agents' desk phones it can ring now (they register to it, not to a node).
        edge["registered_phones"] = await registered_phones(spec)
    except KamailioUnavailable:
        edge["state"] = "not running here" if kamailio else "kamailio not installed"
    answers = await asyncio.gather(*(sip_options(n.host, n.port) for n in spec.nodes))
    leases = await node_leases(settings)
    here = settings.asterisk
    nodes = []
    for node, answer in zip(spec.nodes, answers, strict=True):
        this_machine = node.port == here.sip_port and node.host in (here.bind_address,
                                                                    "127.0.0.1")
        state = dispatch.get(node.name)
        nodes.append({
            "name": node.name, "sip": node.uri,
            "reachable": answer is not None, "sip_status": answer.status if answer else None,
            "version": (report.asterisk.get("version") if this_machine
                        else answer.software if answer and answer.software else None),
            "in_dispatch": state.active if state else None,
            "lease": _lease(node.name, leases, report),
        })
        if answer is None:
            report.problems.append(f"cluster node {node.name} ({node.uri}) does not answer "
                                   "SIP OPTIONS")
        elif state is not None and not state.active:
            report.problems.append(f"the edge sends no calls to cluster node {node.name}: it "
                                   "missed the edge's OPTIONS")
    if settings.cluster.edge_https_port:
        edge["dashboards"] = await _dashboards(settings, report)
    report.cluster = {"edge": edge, "nodes": nodes}


async def _dashboards(settings: Settings, report: Report) -> dict[str, Any]:
    """The edge's HTTPS address in front of the nodes' dashboards: the origin agents open,
    which must be this node's (its WebSocket and forms are refused from any other), and
    which nodes the edge serves desks from, when its HAProxy is on this machine."""
    found: dict[str, Any] = {"origin": settings.cluster.dashboards_origin}
    if settings.origin_not_the_edge_s:
        report.problems.append(settings.origin_not_the_edge_s)
    try:
        found["serving"] = await nodes_up(settings.dashboards())
        for name, up in found["serving"].items():
            if not up:
                report.problems.append(f"the edge serves no desks from cluster node {name}: "
                                       "its dashboard's /status does not answer 200")
    except HaproxyUnavailable:
        found["serving"] = None  # not running here (the edge is another machine)
    return found


async def node_leases(settings: Settings) -> dict[str, Node] | None:
    """The nodes' leases in the shared database; None when it cannot tell (the nodes
    share no PostgreSQL, or it does not answer)."""
    if not settings.database_url.startswith("postgresql"):
        return None
    engine = create_store_engine(settings.database_url)
    try:
        async with asyncio.timeout(5), Store(engine).transaction() as tx:
            return {node.name: node for node in await tx.nodes.all()}
    except (TimeoutError, OSError, SQLAlchemyError):
        return None
    finally:
        await engine.dispose()


def _lease(name: str, leases: dict[str, Node] | None, report: Report) -> dict[str, Any]:
    if leases is None:
        return {"state": "unknown"}
    node = leases.get(name)
    if node is None:
        return {"state": "never held"}
    if node.lost_at is not None:
        report.problems.append(f"cluster node {name} was lost: {node.lost_to} ended its calls "
                               f"(pbx_lost) at {node.lost_at:%Y-%m-%d %H:%M:%S} UTC; it "
                               "renews its lease again once its controller runs")
        return {"state": "lost", "taken_over_by": node.lost_to,
                "lost_at": node.lost_at.isoformat()}
    left = (node.expires_at - utc_now()).total_seconds()
    if left <= 0:
        report.problems.append(f"cluster node {name}'s lease expired {-left:.0f} s ago: its "
                               "controller is down or cut off from the database")
    return {"state": "held" if left > 0 else "expired", "expires_in_s": round(left, 1)}


def examine(settings: Settings) -> Report:
    report = Report()
    running = read_running(settings)
    if running:
        info = asyncio.run(
            _ari_info(running["ari_url"], running["ari_user"], running["ari_password"])
        )
        report.asterisk = {
            "state": "running" if info else "not answering",
            "version": info["system"]["version"] if info else None,
            "where": running["asterisk_where"],
            "kind": running["asterisk_kind"],
            "ari_url": running["ari_url"],
            "sip": running["sip"],
            "pid": running["asterisk_pid"],
        }
        report.dashboard = {"state": "running", "url": running["dashboard_url"]}
        if not info:
            report.problems.append(
                "Asterisk was started by `switchboard run` but ARI does not answer"
            )
    else:
        report.dashboard = {"state": "not running"}
        try:
            found = runtime.locate(
                settings.asterisk.source,
                Path(settings.asterisk.cache_dir) if settings.asterisk.cache_dir else None,
                settings.asterisk.mirror,
                build=False,
            )
            report.asterisk = {
                "state": "installed, not running",
                "version": found.version,
                "where": found.where,
                "kind": found.kind,
            }
        except runtime.AsteriskUnavailable as exc:
            report.asterisk = {"state": "missing", "reason": str(exc)}
            report.problems.append(str(exc))
    url = settings.database_url
    db: dict[str, Any] = {"url": redact_url(url)}
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        db["kind"] = "sqlite"
        db["exists"] = path.exists()
        db["writable"] = os.access(path.parent if not path.exists() else path, os.W_OK) or (
            not path.parent.exists()
        )
    else:
        db["kind"] = "postgresql"
    report.database = db
    chromium = _version_of(["chromium", "--version"])
    report.browser = {"chromium": chromium, "path": shutil.which("chromium")}
    report.tools = {
        "root": os.geteuid() == 0,
        "mmdebstrap": shutil.which("mmdebstrap") is not None,
        "espeak-ng": shutil.which("espeak-ng") is not None,
        "asterisk_cache": str(
            Path(settings.asterisk.cache_dir)
            if settings.asterisk.cache_dir
            else rootfs.default_cache_dir()
        ),
    }
    if settings.cluster.nodes:
        asyncio.run(examine_cluster(settings, report))
    return report


def render_text(report: Report) -> str:
    lines = []
    ast = report.asterisk
    lines.append(f"Asterisk   {ast.get('state')}: {ast.get('version') or ''}".rstrip())
    if ast.get("where"):
        lines.append(f"           {ast['where']}")
    if ast.get("ari_url"):
        lines.append(f"           ARI {ast['ari_url']}  SIP {ast['sip']}")
    db = report.database
    lines.append(f"Database   {db['kind']}: {db['url']}")
    dash = report.dashboard
    lines.append(f"Dashboard  {dash['state']}{'  ' + dash['url'] if dash.get('url') else ''}")
    lines.append(f"Browser    {report.browser['chromium'] or 'chromium not installed'}")
    tools = report.tools
    lines.append(
        "Tools      "
        + ", ".join(
            f"{k}={'yes' if v is True else 'no' if v is False else v}" for k, v in tools.items()
        )
    )
    if report.cluster:
        edge = report.cluster["edge"]
        lines.append(f"Edge       {edge['state']}: {edge['version'] or ''} on {edge['listen']}")
        if "registered_phones" in edge:
            phones = edge["registered_phones"]
            lines.append(f"Phones     {len(phones)} phones (desk and browser) registered "
                         "to the edge" + (f": {', '.join(phones)}" if phones else ""))
        for node in report.cluster["nodes"]:
            answer = f"answers SIP ({node['sip_status']})" if node["reachable"] else "silent"
            dispatch = {True: ", in the dispatch", False: ", out of the dispatch",
                        None: ""}[node["in_dispatch"]]
            lines.append(f"Node       {node['name']} {node['sip']}: {answer}{dispatch}, "
                         f"version {node['version'] or 'unknown'}, "
                         f"lease {node['lease']['state']}")
    for problem in report.problems:
        lines.append(f"PROBLEM    {problem}")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(asdict(report), indent=2)
