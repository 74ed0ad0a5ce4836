"""`switchboard systemd render`: the systemd unit that runs Switchboard on bare metal,
and with ``--edge`` the unit of a cluster's SIP edge (`switchboard edge run`).

One unit, ``switchboard.service``, and no unit for Asterisk: the product starts its
Asterisk itself (a configuration rendered with fresh secrets and the people and numbers
of the database) and re-attaches to it when the controller comes back after a crash.
``KillMode=process`` is what keeps the calls up across that crash: systemd restarts
the controller and leaves its Asterisk running. A stop (SIGTERM to the controller) ends
the calls and stops Asterisk through the controller (``core stop now``). An Asterisk
with a unit of its own (a distribution's package) is the external kind
(``asterisk.source`` = its ARI URL), which this unit runs as well.

Who the unit runs as: the embedded Asterisk runs in a chroot, and the controller starts
it there, drops it to its own account (``-U``), hands it its folders and moves the
recordings out of them. That takes CAP_SYS_CHROOT, CAP_SETUID/SETGID, CAP_CHOWN and
CAP_DAC_OVERRIDE, which together are root in all but name, so that unit says
``User=root`` and bounds the capabilities to that list; Asterisk itself runs
unprivileged. With an Asterisk binary of the host's or an external one, the unit runs
as an unprivileged user (``--user``), with no capability at all (but one to bind a
dashboard port below 1024), and so does the Asterisk it starts.

The edge's unit, ``switchboard-edge.service``, runs Kamailio on the edge's machine, and
``switchboard-edge-dashboards.service`` HAProxy there when the edge serves the nodes'
dashboards (cluster.edge_https_port); both come from ``--edge``.
Root writes its files (readable by the ``kamailio`` group: they hold the desk phones'
passwords) and hands it its run folder; Kamailio binds its port and drops to its own
account (HAProxy reads its file and certificate, binds its port and drops to its own).
``KillMode=mixed``: a stop signals the command alone, which stops Kamailio (HAProxy)
and its children; anything of it still there after the stop timeout is killed.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from handoff.settings import Settings
from pbx import dashboards_edge, kamailio_config, runtime

UNIT = "switchboard.service"
EDGE_UNIT = "switchboard-edge.service"
# HAProxy in front of the nodes' dashboards (cluster.edge_https_port), a unit of its own
# beside Kamailio's: web.edge_run says why.
DASHBOARDS_UNIT = "switchboard-edge-dashboards.service"
# What the controller needs as root for the embedded Asterisk (see the module's doc);
# CAP_KILL stops the Asterisk it re-attached to, which runs as another account;
# CAP_SYS_NICE and CAP_SYS_RESOURCE let Asterisk raise its priority and file limits,
# CAP_NET_ADMIN is the one Asterisk keeps to mark its packets (ToS) after dropping root.
ROOT_CAPABILITIES = (
    "CAP_SYS_CHROOT", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER",
    "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
)
# What `switchboard edge run` needs as root (see the module's doc): CAP_SETUID/SETGID
# for Kamailio to drop to its account, CAP_CHOWN for its files and run folder, CAP_KILL
# to stop it once it runs as that account, CAP_SYS_RESOURCE for its file limit.
EDGE_CAPABILITIES = (
    "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_RESOURCE",
)
# Each call holds sockets in Asterisk (RTP and RTCP per leg, the AI's AudioSocket), and
# Asterisk inherits this limit from the controller.
OPEN_FILES = 65536


# A unit file is readable by every user of the machine (systemctl cat): settings that
# hold a secret belong in the settings file, not on its command line.
_SECRET_KEY = re.compile(r"(password|secret|token)", re.IGNORECASE)
_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+:[^/@\s]*@")


class UnitRefused(ValueError):
    """The unit asked for cannot work; the message says why and what to do."""


@dataclass(frozen=True)
class Unit:
    command: list[str]  # the `switchboard` command with the settings it was rendered with
    workdir: Path
    user: str
    cache_dir: Path | None  # the embedded Asterisk's tree, as `switchboard setup` built it
    # What it listens on (the dashboard, or the SIP edge): below 1024, it may bind it.
    server_port: int
    edge: bool = False  # the cluster's SIP edge (`switchboard edge run`), not a node
    # The edge's dashboards' proxy (`switchboard edge dashboards`); edge is set too.
    dashboards: bool = False

    @property
    def name(self) -> str:
        return DASHBOARDS_UNIT if self.dashboards else EDGE_UNIT if self.edge else UNIT

    @property
    def description(self) -> str:
        if self.dashboards:
            return ("Switchboard's dashboards at the edge: HAProxy in front of the cluster's "
                    "nodes")
        if self.edge:
            return "Switchboard's SIP edge: Kamailio in front of the cluster's nodes"
        return "Switchboard: calls answered by an AI and handed to people"

    def text(self) -> str:
        root = self.user == "root"
        lines = [
            "# Rendered by `switchboard systemd render`; render it again after moving the",
            "# clone or its virtual environment (README: Bare metal (systemd)).",
            "[Unit]",
            f"Description={self.description}",
            "Wants=network-online.target",
            "After=network-online.target postgresql.service",
            # A setting that stops start-up does not fix itself: a few tries, then
            # `systemctl status switchboard` shows why.
            "StartLimitIntervalSec=120",
            "StartLimitBurst=5",
            "",
            "[Service]",
            "Type=exec",
            f"User={self.user}",
            f"WorkingDirectory={_quoted(str(self.workdir))}",
            "Environment=PYTHONUNBUFFERED=1",
        ]
        if self.cache_dir is not None:
            lines.append(f"Environment={_quoted(f'SWITCHBOARD_CACHE={self.cache_dir}')}")
        lines += [
            "ExecStart=" + " ".join(_quoted(arg) for arg in self.command),
            # A crashed controller comes back and re-attaches to its Asterisk and the
            # calls in it; only the controller gets the stop signal, and it stops Asterisk.
            # The edge's command stops its Kamailio (HAProxy) too; a crashed one leaves a
            # Kamailio holding the SIP port (an HAProxy the HTTPS port), which the restart
            # could not bind: systemd kills it.
            "KillMode=mixed" if self.edge else "KillMode=process",
            "Restart=always",
            "RestartSec=2",
            # 2: a configuration error (restarting would only repeat it).
            "RestartPreventExitStatus=2",
            "TimeoutStopSec=60",
            f"LimitNOFILE={OPEN_FILES}",
            "NoNewPrivileges=yes",
        ]
        if root:
            lines.append("CapabilityBoundingSet=" + " ".join(
                EDGE_CAPABILITIES if self.edge else ROOT_CAPABILITIES))
        elif self.server_port < 1024:
            lines += ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                      "AmbientCapabilities=CAP_NET_BIND_SERVICE"]
        else:
            lines.append("CapabilityBoundingSet=")
        lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
        return "\n".join(lines)


def _quoted(value: str) -> str:
    """One word of a unit file: % and $ would be expanded by systemd, blanks split."""
    value = value.replace("%", "%%").replace("$", "$$")
    if any(c in value for c in " \t\"'\\;"):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def switchboard_command() -> list[str]:
    """The installed `switchboard` of the Python that runs this (a venv's absolute path)."""
    script = Path(sys.prefix) / "bin" / "switchboard"
    if script.is_file():
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "web.cli"]


def refuse_secrets(overrides: list[str]) -> None:
    """Before the settings are read: a --set with a secret goes nowhere near the unit."""
    for item in overrides:
        key, _, value = item.partition("=")
        if _SECRET_KEY.search(key) or _CREDENTIALS_IN_URL.search(value):
            raise UnitRefused(
                f"--set {key.strip()}: its secret would sit in the unit file, which every "
                "user of the machine can read; put it in the settings file (mode 0600) and "
                "give that with --config")


def build_unit(settings: Settings, config: Path | None, overrides: list[str],
               user: str) -> Unit:
    """The unit running `switchboard run` with this settings file and these --set."""
    ast = settings.asterisk
    install = runtime.locate(ast.source, Path(ast.cache_dir) if ast.cache_dir else None,
                             ast.mirror, build=False)
    if install.kind == "embedded" and user != "root":
        raise UnitRefused(
            f"--user {user}: the embedded Asterisk runs in a chroot, which only root can "
            "start (Asterisk itself then drops to its own account). Render with --user root, "
            "or install Asterisk >= 20 on the host (or set asterisk.source) to run "
            "Switchboard as an unprivileged user")
    return Unit(
        command=[*_command(config, overrides), "run"],
        workdir=Path.cwd(),
        user=user,
        cache_dir=install.root.path.parent if install.root else None,
        server_port=settings.server.port,
    )


def build_edge_unit(settings: Settings, config: Path | None, overrides: list[str],
                    user: str) -> Unit:
    """The unit running `switchboard edge run` with this settings file and these --set."""
    if not settings.cluster.nodes:
        raise UnitRefused("cluster.nodes: no nodes, so no edge to run (add "
                          "[[cluster.nodes]] tables)")
    try:
        kamailio_config.find_binary()
    except kamailio_config.KamailioUnavailable as exc:
        raise UnitRefused(f"{exc}: the edge's unit runs it") from None
    return Unit(command=[*_command(config, overrides), "edge", "run"], workdir=Path.cwd(),
                user=user, cache_dir=None, server_port=settings.cluster.edge_port,
                edge=True)


def build_dashboards_unit(settings: Settings, config: Path | None, overrides: list[str],
                          user: str) -> Unit | None:
    """The unit running `switchboard edge dashboards`, when the edge serves the nodes'
    dashboards (cluster.edge_https_port); None when it does not. As root, HAProxy takes
    its port and certificate and drops to its own account."""
    if not settings.cluster.edge_https_port:
        return None
    try:
        dashboards_edge.find_binary()
    except dashboards_edge.HaproxyUnavailable as exc:
        raise UnitRefused(f"{exc}: the dashboards' unit at the edge runs it") from None
    return Unit(command=[*_command(config, overrides), "edge", "dashboards"],
                workdir=Path.cwd(), user=user, cache_dir=None,
                server_port=settings.cluster.edge_https_port, edge=True, dashboards=True)


def _command(config: Path | None, overrides: list[str]) -> list[str]:
    """`switchboard` with the settings file and the --set it was rendered with."""
    command = switchboard_command()
    if config is not None:
        command += ["--config", str(config.resolve())]
    for item in overrides:
        command += ["--set", item]
    return command


def write_units(unit: Unit, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / unit.name
    path.write_text(unit.text())
    return [path]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `systemd` command's arguments (its function is set by the caller)."""
    systemd = sub.add_parser("systemd", help="systemd unit for bare metal")
    systemd_sub = systemd.add_subparsers(dest="systemd_command", required=True)
    render = systemd_sub.add_parser(
        "render", help="write switchboard.service, running `switchboard run` with the "
        "settings file and --set given here")
    render.add_argument("--out", required=True, type=Path, help="folder to write it to")
    render.add_argument(
        "--user", default="root",
        help="account the unit runs as (root for the embedded Asterisk, whose chroot needs "
        "it; Asterisk itself drops to its own account)")
    render.add_argument(
        "--edge", action="store_true",
        help=f"write {EDGE_UNIT} instead, running `switchboard edge run` (the cluster's "
        "SIP edge, on its own machine; as root, Kamailio drops to its own account), and "
        f"with cluster.edge_https_port {DASHBOARDS_UNIT}, running `switchboard edge "
        "dashboards` (HAProxy, which drops to its own account too)")
    return render
