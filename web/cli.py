"""The `switchboard` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from handoff import logs, tls
from handoff.prompts import PromptError
from handoff.receptionist import make_prompts
from handoff.settings import Settings, SettingsError, load
from handoff.store import (
    Store,
    create_store_engine,
    upgrade_to_head,
)
from pbx import runtime
from pbx.asterisk_config import Dirs, InboundRoute, InstanceSpec, render, write_files
from pbx.config_values import ConfigValueError
from web import (
    backup,
    cli_assistants,
    cli_edge,
    cli_lists,
    cli_people,
    cli_queues,
    cli_trunks,
    doctor,
    install_check,
    systemd,
)
from web.app import build_app
from web.demo import DEMO_NUMBER, RECEPTIONIST, demo_caller_voice
from web.external import Credentials, credentials, pbx_spec
from web.services import SERVICES
from web.telephony import DIRECTORY_CHECK_S, external_spec, fixed_trunks

DEFAULT_CONFIG = Path("switchboard.toml")
# Who the audit log names for a change made on the server's command line.
CLI_ACTOR = "cli"
# The CLI writes the database only; a running product's PBX notices within
# web.telephony.DIRECTORY_CHECK_S (sessions end on the tabs' next request at once).
RUNNING_PBX_NOTE = (f"a running Switchboard's PBX takes this within "
                    f"{DIRECTORY_CHECK_S:.0f} s")


def _config_file(args: argparse.Namespace) -> Path | None:
    """The settings file in use: --config, else ./switchboard.toml if there is one."""
    file: Path | None = args.config
    if file is None and DEFAULT_CONFIG.exists():
        file = DEFAULT_CONFIG
    return file


def _settings(args: argparse.Namespace) -> Settings:
    file = _config_file(args)
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SettingsError(f"--set {item!r}: expected section.key=value")
        overrides[key.strip()] = value.strip()
    return load(file, overrides=overrides)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Settings (file, environment, command line), then the database (web.install_check).

    Exit 2: the settings are wrong; 1: the installation has an error; 0: it can run,
    perhaps with warnings.
    """
    # Render every template with the configured values (and placeholder secrets), so a
    # value Asterisk would reject is reported now, by name.
    placeholder = "placeholder-secret"
    try:
        settings = _settings(args)
        spec = pbx_spec(settings, Dirs(root="/srv/switchboard/check"),
                        Credentials("switchboard", placeholder, placeholder),
                        routes=(InboundRoute(DEMO_NUMBER, RECEPTIONIST),),
                        route_unknown=False)
        files = render(spec)
    except (SettingsError, ConfigValueError) as exc:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "findings": [
            {"check": "settings", "severity": "error", "message": str(exc)}]}, indent=2))
        return 2
    report = install_check.examine(settings, spec)
    render_report = install_check.render_json if args.json else install_check.render_text
    print(render_report(report, list(files)))
    return 0 if report.ok else 1


def cmd_config_render(args: argparse.Namespace) -> int:
    """Write every file an Asterisk Switchboard does not start needs (docker compose, a
    distribution's package): from the settings and the store (assistants' numbers and
    the catch-all, agents, trunks, TLS, blocked addresses), the secrets from the
    environment so they never sit in a settings file or the repo. `run` writes the same
    files to asterisk.config_dir again whenever they change (web.external)."""
    settings = _settings(args)
    account = credentials(settings)
    out = Path(args.out or settings.asterisk.config_dir)
    if not str(out) or str(out) == ".":
        raise SettingsError("config render: give --out DIR, or set asterisk.config_dir")
    fixed = fixed_trunks(settings, None)
    holder: list[InstanceSpec] = []

    async def from_store(store: Store) -> int:
        holder.append(await external_spec(settings, store, account, fixed))
        return 0

    asyncio.run(_on_store(settings, from_store))
    out.mkdir(parents=True, exist_ok=True)
    files = write_files(holder[0], out)
    print(f"wrote {len(files)} Asterisk files to {out}")
    if args.state_folders:
        # Asterisk creates none of its folders: without var/lib its database cannot open
        # and it exits at once ("ASTdb initialization failed").
        dirs = holder[0].dirs
        for inside in dirs.all():
            if Path(inside).is_relative_to(dirs.root):
                (Path(args.state_folders) / Path(inside).relative_to(dirs.root)).mkdir(
                    parents=True, exist_ok=True)
        print(f"made Asterisk's state folders under {args.state_folders}")
    return 0


def cmd_systemd_render(args: argparse.Namespace) -> int:
    try:
        systemd.refuse_secrets(args.set or [])
        build = systemd.build_edge_unit if args.edge else systemd.build_unit
        settings, config = _settings(args), _config_file(args)
        units = [build(settings, config, args.set or [], args.user)]
        dashboards = (systemd.build_dashboards_unit(settings, config, args.set or [],
                                                    args.user) if args.edge else None)
    except systemd.UnitRefused as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    for unit in [*units, *([dashboards] if dashboards else [])]:
        for path in systemd.write_units(unit, args.out):
            print(f"wrote {path}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    out = Path(args.out) if args.out else backup.default_archive(settings)
    summary = asyncio.run(backup.backup(settings, out, _config_file(args)))
    print(_summary_text("backed up", summary))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    settings = _settings(args)
    summary = asyncio.run(backup.restore(settings, Path(args.archive)))
    print(_summary_text("restored", summary))
    if summary.settings_file:
        print(f"the settings file it was taken with ({summary.settings_file}) is in "
              f"{settings.data_path / 'restored-settings'}: compare it with yours")
    return 0


def _summary_text(verb: str, summary: backup.Summary) -> str:
    rows = sum(summary.rows.values())
    return (f"{verb} {summary.archive}: schema {summary.revision}, {rows} rows in "
            f"{len(summary.rows)} tables ({summary.rows.get('calls', 0)} calls), "
            f"{summary.recordings} recording files")


def cmd_doctor(args: argparse.Namespace) -> int:
    report = doctor.examine(_settings(args))
    print(doctor.render_json(report) if args.json else doctor.render_text(report))
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ast = settings.asterisk
    install = runtime.locate(ast.source, Path(ast.cache_dir) if ast.cache_dir else None, ast.mirror)
    print(f"Asterisk: {install.version} ({install.where})")
    settings.data_path.mkdir(parents=True, exist_ok=True)
    # The reference receptionist's voice, spoken once by espeak-ng.
    prompts = make_prompts(settings.data_path / "prompts")
    print(f"Receptionist prompts: {len(prompts)} in {settings.data_path / 'prompts'}")
    if settings.demo.enabled and settings.demo.test_caller:
        print(f"Test caller's voice: {demo_caller_voice(settings)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    logging.getLogger("alembic").setLevel(logging.NOTSET)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    startup = app[SERVICES].startup
    # A fatal start-up error (a wrong setting, not a database or Asterisk still away)
    # stops the server as Ctrl-C does, then is reported as if start-up had raised it.
    startup.stop = lambda: os.kill(os.getpid(), signal.SIGINT)
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        # Agents on other machines: browsers grant the microphone to secure pages only.
        ssl_context=(tls.server_context("server", server.tls_cert, server.tls_key)
                     if (server := settings.server).tls_cert else None),
        print=None,
        access_log=None,
    )
    if startup.fatal is not None:
        raise startup.fatal
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    # Imported when asked: the benchmarks' rigs and probes are nothing a server needs.
    if args.bench_command == "dashboard" and args.board:
        from web.bench import board as bench_board  # noqa: PLC0415

        return int(bench_board.main(args.calls, args.json))
    if args.bench_command == "dashboard":
        from web.bench import dashboard as bench_dashboard  # noqa: PLC0415

        return int(bench_dashboard.main(args.clients, args.json))
    if args.bench_command == "capacity":
        from web.bench import capacity as bench_capacity  # noqa: PLC0415

        return int(bench_capacity.main(args.steps, args.max, args.window, args.recording,
                                       args.json, chart_path=args.chart,
                                       past_knee=args.past_knee,
                                       handoff_rate=args.handoff_rate))
    if args.bench_command == "cluster":
        from web.bench import cluster as bench_cluster  # noqa: PLC0415

        return int(bench_cluster.main(args.calls, args.json, args.lease))
    if args.bench_command == "faults":
        from web.bench import fault_soak  # noqa: PLC0415

        return int(fault_soak.main(args.minutes, args.json, args.seed))
    if args.cross_node and (args.agent == "browser" or args.baseline):
        print("switchboard bench handoff: --cross-node measures SIP desk phones, without "
              "--baseline", file=sys.stderr)
        return 2
    if args.agent != "browser" and (args.line is not None or args.soak is not None):
        print("switchboard bench handoff: --line and --soak are for --agent browser "
              "(a desk phone rings)", file=sys.stderr)
        return 2
    if args.agent == "browser":
        if args.baseline:
            print("switchboard bench handoff: --baseline queue measures SIP desk phones; "
                  "run it without --agent browser", file=sys.stderr)
            return 2
        # Playwright is the benchmark's own dependency (the `bench` extra), not the server's.
        if importlib.util.find_spec("playwright") is None:
            print("switchboard bench handoff --agent browser drives Chromium with Playwright, "
                  "which is not installed: pip install 'switchboard[bench]'", file=sys.stderr)
            return 2
        if args.soak is not None:
            if args.line != "open" or args.soak <= 0 or args.every <= 0:
                print("switchboard bench handoff: --soak holds one open line: give it "
                      "--line open, and minutes and --every seconds above 0", file=sys.stderr)
                return 2
            from web.bench import line_soak  # noqa: PLC0415

            return int(line_soak.main(args.soak, args.every, args.json))
        from web.bench import browser_handoff  # noqa: PLC0415

        return int(browser_handoff.main(args.calls, args.json, args.line or "both"))
    from web.bench import handoff as bench_handoff  # noqa: PLC0415

    result: int = bench_handoff.main(args.calls, args.json, args.baseline, args.cross_node)
    return result


async def _on_store(settings: Settings, act: Callable[[Store], Awaitable[int]]) -> int:
    """Run `act` on the installation's database (brought up to date first)."""
    # A fresh installation's first command may come before any `run`: the default
    # SQLite database lives in the data folder.
    settings.data_path.mkdir(parents=True, exist_ok=True)
    engine = create_store_engine(settings.database_url)
    try:
        await upgrade_to_head(engine)
        return await act(Store(engine))
    finally:
        await engine.dispose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (default ./switchboard.toml)"
    )
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override one setting"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # What the commands on the installation's database (people, assistants, trunks,
    # queues, the named lists) share: its store, the audit log's actor, the note.
    on_store = cli_assistants.Cli(
        run=lambda args, act: asyncio.run(_on_store(_settings(args), act)),
        actor=CLI_ACTOR, note=RUNNING_PBX_NOTE)
    sub.add_parser("run", help="start Asterisk, the controller and the dashboard").set_defaults(
        func=cmd_run
    )
    sub.add_parser("setup", help="build or find Asterisk and prepare the data folder").set_defaults(
        func=cmd_setup
    )
    doc = sub.add_parser("doctor", help="report what was found and what runs")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.set_defaults(func=cmd_doctor)
    bench = sub.add_parser("bench", help="measure (benchmarks print JSON with --json)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    handoff = bench_sub.add_parser("handoff", help="AI-to-agent moves on a real Asterisk")
    handoff.add_argument("--calls", type=int, default=20)
    handoff.add_argument("--json", action="store_true")
    handoff.add_argument(
        "--baseline", choices=["queue"], help="also measure the classic way in the same run"
    )
    handoff.add_argument(
        "--cross-node", action="store_true",
        help="every other call accepted on a second node, reached through a SIP leg "
             "between the nodes: both kinds reported, and what the leg adds")
    handoff.add_argument(
        "--agent", choices=["sip", "browser"], default="sip",
        help="sip: a desk phone answering at once; browser: Chromium's WebRTC softphone",
    )
    handoff.add_argument(
        "--line", choices=["open", "ring", "both"],
        help="with --agent browser: the agent's open line (Accept unmutes it in the call), the "
             "ringing softphone, or both in one run (the default)",
    )
    handoff.add_argument(
        "--soak", type=float, nargs="?", const=20.0, metavar="MINUTES",
        help="with --agent browser --line open: hold one line this long (default 20 min), "
             "a handoff every --every seconds; reports drops, re-opens and refreshes seen")
    handoff.add_argument("--every", type=float, default=30.0, metavar="SECONDS",
                         help="with --soak: seconds between handoffs (default 30)")
    handoff.set_defaults(func=cmd_bench)
    capacity = bench_sub.add_parser(
        "capacity", help="concurrent recorded AI calls, ramped in steps until the knee")
    capacity.add_argument("--steps", type=int, nargs="+",
                          help="concurrent calls of each step (default 25 50 100 150 200 "
                          "300 400)")
    capacity.add_argument("--max", type=int, help="stop after the step of this many calls")
    capacity.add_argument("--window", type=float, default=10.0,
                          help="seconds each step is measured once its calls are up")
    capacity.add_argument("--recording", default="bridge",
                          choices=["bridge", "none", "mixmonitor", "snoop", "legs"],
                          help="how each call is recorded (not bridge: swapped from outside "
                          "once the call is up, to see where the PBX's CPU goes)")
    capacity.add_argument("--json", action="store_true")
    capacity.add_argument("--chart", type=Path, metavar="FILE.svg",
                          help="also draw the run, step by step, as an SVG picture")
    capacity.add_argument("--past-knee", action="store_true",
                          help="run every step, not only up to the knee (where the CPU goes "
                          "beyond it)")
    capacity.add_argument("--handoff-rate", type=float, default=2.0, metavar="PER_S",
                          help="handoffs a second throughout the ramp, to agents whose desk "
                          "phones keep an open line, each handed back to the AI (default 2; "
                          "0: none)")
    capacity.set_defaults(func=cmd_bench)
    cli_people.add_parser(sub, on_store)
    cli_assistants.add_parser(sub, on_store)
    cli_trunks.add_parser(sub, on_store, settings=_settings)
    cli_queues.add_parser(sub, on_store)
    for named_list in (cli_lists.PAUSE_REASONS, cli_lists.DISPOSITIONS):
        cli_lists.add_parser(sub, on_store, named_list)
    cluster = bench_sub.add_parser(
        "cluster", help="two nodes behind Kamailio on one PostgreSQL, one killed mid-run")
    cluster.add_argument("--calls", type=int, default=2,
                         help="calls on each node before the kill (at least 1)")
    cluster.add_argument("--lease", type=int, default=5,
                         help="the nodes' cluster.lease_s (3 to 300)")
    cluster.add_argument("--json", action="store_true")
    cluster.set_defaults(func=cmd_bench)
    dash = bench_sub.add_parser("dashboard", help="card delivery to many dashboard tabs")
    dash.add_argument("--clients", type=int, default=1000)
    dash.add_argument("--board", action="store_true",
                      help="the supervisor board's update delay with live calls and "
                      "their transcripts flowing")
    dash.add_argument("--calls", type=int, default=50, help="live calls for --board")
    dash.add_argument("--json", action="store_true")
    dash.set_defaults(func=cmd_bench)
    faults = bench_sub.add_parser("faults", help="calls and handoffs while Asterisk restarts, "
                                  "freezes, the controller dies, links and phones drop")
    faults.add_argument("--minutes", type=float, default=10.0)
    faults.add_argument("--seed", type=int, help="the faults' random order and moments")
    faults.add_argument("--json", action="store_true")
    faults.set_defaults(func=cmd_bench)
    back = sub.add_parser("backup", help="write the database, recordings and settings "
                          "file to one archive (the product may be running)")
    back.add_argument("--out", help="archive path (default DATA_DIR/backups/switchboard-"
                      "<time>.tar.gz)")
    back.set_defaults(func=cmd_backup)
    rest = sub.add_parser("restore", help="fill an empty installation from a backup")
    rest.add_argument("archive")
    rest.set_defaults(func=cmd_restore)
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_check = config_sub.add_parser(
        "check", help="validate the settings, Asterisk's files and the database; "
        "exit 1 on an error, 0 with warnings only")
    config_check.add_argument("--json", action="store_true", help="machine-readable output")
    config_check.set_defaults(func=cmd_config_check)
    render_cmd = config_sub.add_parser(
        "render", help="write Asterisk's files for an externally run Asterisk (docker compose)"
    )
    # Asterisk's own folders are settings (asterisk.etc_dir, state_dir, modules_dir,
    # share_dir), not options: `run` renders the same files again with them.
    render_cmd.add_argument("--out", help="folder to write the .conf files to (default: "
                            "asterisk.config_dir)")
    render_cmd.add_argument("--state-folders", metavar="DIR",
                            help="also make Asterisk's state folders (database, spool, "
                            "logs) in DIR: asterisk.state_dir as this machine mounts it")
    render_cmd.set_defaults(func=cmd_config_render)
    cli_edge.add_parsers(sub, config_sub, settings=_settings, on_store=_on_store)
    systemd.add_parser(sub).set_defaults(func=cmd_systemd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=logs.TEXT_FORMAT)
    # A command's own output is what it prints; the migrations it runs on a new
    # database are not news to the person who typed it (`run` logs them).
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        result: int = args.func(args)
        return result
    except (SettingsError, ConfigValueError) as exc:
        print(f"switchboard: configuration error: {exc}", file=sys.stderr)
        return 2
    except backup.BackupError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    except (runtime.AsteriskUnavailable, PromptError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
