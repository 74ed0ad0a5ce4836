"""`switchboard trunk`: trunks to carriers from the server's command line.

Stored trunks are added, changed and removed here as on the Admin page (web.trunks does
the checking and the audit lines); the settings file's are listed, and changed in the
file. The command line writes the database only: a running Switchboard's PBX takes the
change within web.telephony.DIRECTORY_CHECK_S.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from handoff.settings import Settings
from handoff.store import Store
from web import trunks
from web.cli_assistants import Cli
from web.telephony import fixed_trunks


def _trunk_changes(args: argparse.Namespace) -> dict[str, object]:
    """The options given, as web.trunks takes them; the password from stdin (never the
    command line: every user of the machine can read a process's arguments)."""
    changes: dict[str, object] = {
        "name": args.rename if args.trunk_command == "edit" else args.name,
        "host": args.host, "port": args.port, "caller_id": args.caller_id,
        "codecs": args.codecs, "patterns": args.allow, "username": args.username,
        "allow_international": args.international, "allow_premium": args.premium,
        "enabled": args.enabled,
        "auth": "register" if args.register else ("ip" if args.register is False else None),
    }
    if args.password_stdin:
        changes["password"] = sys.stdin.readline().rstrip("\n")
    elif args.register and sys.stdin.isatty():
        changes["password"] = getpass.getpass(f"{args.name}'s password at the carrier: ")
    return changes


def _trunk_command(args: argparse.Namespace, cli: Cli,
                   settings: Callable[[argparse.Namespace], Settings]) -> int:
    """add, edit or remove a stored trunk (web.trunks), or list every trunk."""
    fixed = fixed_trunks(settings(args), None)
    names = [t.name for t in fixed]

    async def act(store: Store) -> int:
        async with store.transaction() as tx:
            if args.trunk_command == "list":
                for item in await trunks.listing(tx, fixed):
                    shown = trunks.view(item.trunk)
                    classes = [c for c in ("international", "premium")
                               if shown[f"allow_{c}"]]
                    print("\t".join([
                        shown["name"], shown["source"], shown["auth"],
                        f"{shown['host']}:{shown['port']}", shown["caller_id"] or "-",
                        ",".join(shown["patterns"]) or "(no patterns: nothing goes out)",
                        "+".join(classes) or "national only",
                        "enabled" if shown["enabled"] else "disabled"]))
                return 0
            if args.trunk_command == "add":
                await trunks.add(tx, _trunk_changes(args), actor=cli.actor, fixed_names=names)
            elif args.trunk_command == "edit":
                await trunks.edit(tx, await trunks.id_of(tx, args.name), _trunk_changes(args),
                                  actor=cli.actor, fixed_names=names)
            else:
                await trunks.remove(tx, await trunks.id_of(tx, args.name), actor=cli.actor)
        done = {"add": "added", "edit": "changed", "remove": "removed"}[args.trunk_command]
        print(f"trunk {args.name}: {done}")
        print(cli.note)
        return 0

    try:
        return cli.run(args, act)
    except trunks.TrunkRefused as exc:
        print(f"switchboard: {exc.reason}", file=sys.stderr)
        return 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], cli: Cli,
               settings: Callable[[argparse.Namespace], Settings]) -> None:
    def run(args: argparse.Namespace) -> int:
        return _trunk_command(args, cli, settings)

    trunk = sub.add_parser("trunk", help="trunks to carriers (the settings file's are listed "
                           "too, and changed in the file)")
    trunk_sub = trunk.add_subparsers(dest="trunk_command", required=True)
    for action, what in (("add", "add a trunk"), ("edit", "change the options given")):
        cmd = trunk_sub.add_parser(action, help=what)
        cmd.add_argument("name")
        cmd.add_argument("--host", required=action == "add")
        cmd.add_argument("--port", type=int)
        cmd.add_argument("--register", action=argparse.BooleanOptionalAction,
                         help="register to the carrier with --username and a password "
                         "(--no-register: recognised by its address)")
        cmd.add_argument("--username")
        cmd.add_argument("--password-stdin", action="store_true",
                         help="read the password from the first line of stdin")
        cmd.add_argument("--caller-id", help="the number the carrier shows for calls out")
        cmd.add_argument("--codecs", help="e.g. ulaw,alaw")
        cmd.add_argument("--allow", help="number patterns allowed out, e.g. "
                         "'_0[1-7]XXXXXXXX _+331XXXXXXXX'")
        cmd.add_argument("--international", action=argparse.BooleanOptionalAction,
                         help="allow international numbers (toll fraud: think twice)")
        cmd.add_argument("--premium", action=argparse.BooleanOptionalAction,
                         help="allow premium-rate numbers")
        cmd.add_argument("--enabled", action=argparse.BooleanOptionalAction)
        if action == "edit":
            cmd.add_argument("--rename", help="a new name")
        cmd.set_defaults(func=run)
    remove = trunk_sub.add_parser("remove", help="remove a stored trunk")
    remove.add_argument("name")
    remove.set_defaults(func=run)
    trunk_sub.add_parser("list", help="every trunk, in the order calls out try them") \
        .set_defaults(func=run)
