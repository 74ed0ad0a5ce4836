"""`switchboard pause-reason`: the reasons agents may choose when away, from the server's
command line.

Each command is one transaction on the installation's database, audited as "cli"
(web.pause_reasons does the checking and the audit lines, as for the Admin page). A desk
offers the reasons listed when it is loaded.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from handoff.store import Store
from handoff.store.models import PauseReason
from web import pause_reasons
from web.cli_assistants import Cli

NOTE = "A desk offers it from its next page load."


def _line(row: PauseReason) -> str:
    return f"{row.name}\t{'productive' if row.productive else 'not productive'}"


def _command(args: argparse.Namespace, cli: Cli) -> int:
    async def act(store: Store) -> int:
        async with store.transaction() as tx:
            if args.pause_command == "list":
                for row in await tx.pause_reasons.listed():
                    print(_line(row))
                return 0
            if args.pause_command == "add":
                row = await pause_reasons.add(
                    tx, {"name": args.name, "productive": args.productive}, actor=cli.actor)
                print(_line(row))
                print(NOTE)
                return 0
            await pause_reasons.remove(tx, await pause_reasons.id_of(tx, args.name),
                                       actor=cli.actor)
            print(f"pause reason {args.name}: removed")
            return 0

    try:
        return cli.run(args, act)
    except pause_reasons.PauseReasonRefused as exc:
        print(f"switchboard: {exc.reason}", file=sys.stderr)
        return 2


def add_parser(sub: Any, cli: Cli) -> None:
    """``switchboard pause-reason add|remove|list``."""
    parser = sub.add_parser("pause-reason", help="why an agent may be away (break, "
                            "training…), productive or not")
    commands = parser.add_subparsers(dest="pause_command", required=True)
    add = commands.add_parser("add", help="add a reason agents may choose when away")
    add.add_argument("name")
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--productive", dest="productive", action="store_true",
                      help="work off the phone (training, coaching)")
    kind.add_argument("--not-productive", dest="productive", action="store_false",
                      help="a break (lunch, personal)")
    commands.add_parser("remove", help="no longer offered; agents away for it keep it") \
        .add_argument("name")
    commands.add_parser("list", help="every reason offered, productive or not")
    parser.set_defaults(func=lambda args: _command(args, cli))
