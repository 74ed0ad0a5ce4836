"""`switchboard pause-reason` and `switchboard disposition`: the admin's named lists for
agents' states, from the server's command line.

Both lists work the same way (add, remove, list; a removed name stays taken), so one
piece of code serves both; what differs is a :class:`NamedList`. Each command is one
transaction on the installation's database, audited as "cli" (web.pause_reasons and
web.dispositions do the checking and the audit lines, as for the Admin page). A desk
offers what is listed when it is loaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from handoff.store import Store, Transaction
from handoff.store.models import Disposition, PauseReason
from web import dispositions, pause_reasons
from web.cli_assistants import Cli

NOTE = "A desk offers it from its next page load."

Row = PauseReason | Disposition


@dataclass(frozen=True)
class NamedList:
    command: str  # the subcommand: pause-reason
    kind: str  # as sentences say it: pause reason
    help: str
    listed: Callable[[Transaction], Awaitable[Sequence[Row]]]
    line: Callable[[Row], str]
    # What `add` writes, from the command's own options (the name included).
    changes: Callable[[argparse.Namespace], dict[str, Any]]
    add: Callable[..., Awaitable[Row]]
    remove: Callable[..., Awaitable[Row]]
    id_of: Callable[[Transaction, str], Awaitable[int]]
    add_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    remove_help: str = "no longer offered; what already carries it keeps it"


def _productive(parser: argparse.ArgumentParser) -> None:
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--productive", dest="productive", action="store_true",
                      help="work off the phone (training, coaching)")
    kind.add_argument("--not-productive", dest="productive", action="store_false",
                      help="a break (lunch, personal)")


def _reason_line(row: Row) -> str:
    assert isinstance(row, PauseReason)
    return f"{row.name}\t{'productive' if row.productive else 'not productive'}"


PAUSE_REASONS = NamedList(
    command="pause-reason", kind="pause reason",
    help="why an agent may be away (break, training…), productive or not",
    listed=lambda tx: tx.pause_reasons.listed(), line=_reason_line,
    changes=lambda args: {"name": args.name, "productive": args.productive},
    add=pause_reasons.add, remove=pause_reasons.remove, id_of=pause_reasons.id_of,
    add_options=_productive, remove_help="no longer offered; agents away for it keep it")

DISPOSITIONS = NamedList(
    command="disposition", kind="disposition",
    help="how a call ended (sale, complaint…), picked by the agent at wrap-up",
    listed=lambda tx: tx.dispositions.listed(), line=lambda row: row.name,
    changes=lambda args: {"name": args.name},
    add=dispositions.add, remove=dispositions.remove, id_of=dispositions.id_of,
    remove_help="no longer offered; the calls that have it keep it")


def _command(args: argparse.Namespace, cli: Cli, what: NamedList) -> int:
    async def act(store: Store) -> int:
        async with store.transaction() as tx:
            if args.list_command == "list":
                for row in await what.listed(tx):
                    print(what.line(row))
                return 0
            if args.list_command == "add":
                row = await what.add(tx, what.changes(args), actor=cli.actor)
                print(what.line(row))
                print(NOTE)
                return 0
            await what.remove(tx, await what.id_of(tx, args.name), actor=cli.actor)
            print(f"{what.kind} {args.name}: removed")
            return 0

    try:
        return cli.run(args, act)
    except pause_reasons.PauseReasonRefused as exc:
        print(f"switchboard: {exc.reason}", file=sys.stderr)
        return 2


def add_parser(sub: Any, cli: Cli, what: NamedList) -> None:
    """``switchboard <what.command> add|remove|list``."""
    parser = sub.add_parser(what.command, help=what.help)
    commands = parser.add_subparsers(dest="list_command", required=True)
    add = commands.add_parser("add", help=f"add a {what.kind}")
    add.add_argument("name")
    what.add_options(add)
    commands.add_parser("remove", help=what.remove_help).add_argument("name")
    commands.add_parser("list", help=f"every {what.kind} offered")
    parser.set_defaults(func=lambda args: _command(args, cli, what))
