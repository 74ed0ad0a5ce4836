"""`switchboard queue`: queues from the server's command line.

Each command is one transaction on the installation's database, audited as "cli" (web.queues
does the checking and the audit lines, as for the Admin page). Queues are read from the
database at each handoff, so a running Switchboard follows a change from its next card.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from handoff.queues import MAX_LEVEL, MIN_LEVEL, Strategy
from handoff.store import Store
from web import queues
from web.cli_assistants import Cli

QUEUE_NOTE = "A running Switchboard routes its next handoff by it."


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """The options given, as web.queues takes them (None: unchanged)."""
    return {
        "name": args.name, "strategy": args.strategy, "ring_s": args.ring,
        "max_wait_s": args.max_wait, "service_level_s": args.service_level,
        "no_answer_limit": args.away_after, "wrap_up_s": args.wrap_up,
        "members": None if args.member is None else " ".join(args.member),
        "assistants": None if args.assistant is None else " ".join(args.assistant),
        "topics": None if args.topic is None else " ".join(args.topic),
        "hours": [] if args.always_open else args.hours,
        "holidays": [] if args.always_open else args.holiday,
    }


def _line(shown: dict[str, Any]) -> str:
    stats = shown["stats"]
    level = stats["service_level"]
    return "\t".join([
        shown["name"], shown["strategy"],
        f"ring {shown['ring_s']}s, wait {shown['max_wait_s']}s, "
        f"service level {shown['service_level_s']}s, away after {shown['no_answer_limit']}, "
        "wrap-up " + ("default" if shown["wrap_up_s"] is None else f"{shown['wrap_up_s']}s"),
        " ".join(f"{m['login']}:{m['level']}" for m in shown["members"]) or "(no members)",
        "assistants " + (" ".join(shown["assistants"]) or "-"),
        "topics " + (" ".join(shown["topics"]) or "-"),
        f"{stats['answered']}/{stats['entered']} answered, "
        + ("-" if level is None else f"{round(level * 100)}%") + " within service level, "
        f"{stats['no_answers']} no-answers"])


def _command(args: argparse.Namespace, cli: Cli) -> int:
    async def act(store: Store) -> int:
        async with store.transaction() as tx:
            if args.queue_command == "list":
                for row in await tx.queues.listed():
                    print(_line(await queues.view(tx, row)))
                return 0
            if args.queue_command == "add":
                row = await queues.add(tx, _changes(args), actor=cli.actor)
            elif args.queue_command == "edit":
                row = await queues.edit(tx, await queues.id_of(tx, args.name),
                                        _changes(args), actor=cli.actor)
            else:
                await queues.remove(tx, await queues.id_of(tx, args.name), actor=cli.actor)
                print(f"queue {args.name}: removed")
                return 0
            print(_line(await queues.view(tx, row)))
        print(QUEUE_NOTE)
        return 0

    try:
        return cli.run(args, act)
    except queues.QueueRefused as exc:
        print(f"switchboard: {exc.reason}", file=sys.stderr)
        return 2


def add_parser(sub: Any, cli: Cli) -> None:
    """``switchboard queue add|edit|remove|list``."""
    parser = sub.add_parser("queue", help="queues: members and their levels, strategy, "
                            "what routes to them")
    commands = parser.add_subparsers(dest="queue_command", required=True)
    for action, what in (("add", "add a queue"),
                         ("edit", "change the options given (a list given replaces the "
                                  "list)")):
        cmd = commands.add_parser(action, help=what)
        cmd.add_argument("name")
        cmd.add_argument("--strategy", choices=[s.value for s in Strategy])
        cmd.add_argument("--member", action="append", metavar="LOGIN[:LEVEL]",
                         help=f"a member and their level ({MIN_LEVEL}-{MAX_LEVEL}, default "
                              f"{(MIN_LEVEL + MAX_LEVEL) // 2}); repeat, in round robin's order")
        cmd.add_argument("--assistant", action="append", metavar="NAME",
                         help="an assistant whose cards come here (its default queue)")
        cmd.add_argument("--topic", action="append", metavar="NAME",
                         help="a topic whose cards come here, whatever the assistant")
        cmd.add_argument("--ring", type=int, metavar="S",
                         help="seconds one member has a card before it moves on")
        cmd.add_argument("--max-wait", type=int, metavar="S",
                         help="seconds a caller waits before the assistant's fallback")
        cmd.add_argument("--service-level", type=int, metavar="S",
                         help="a card taken within this many seconds meets the service level")
        cmd.add_argument("--wrap-up", metavar="S|default",
                         help="seconds of wrap-up after one of its calls (0: none), instead "
                              "of the desk.wrap_up_s setting; 'default' goes back to it")
        cmd.add_argument("--hours", action="append", metavar="'DAYS HH:MM-HH:MM'",
                         help="business hours in the site's zone, e.g. 'mon-fri 09:00-17:00'; "
                              "out of them the queue takes no card and the fallback applies; "
                              "repeat for several (the spans given replace the list)")
        cmd.add_argument("--holiday", action="append", metavar="YYYY-MM-DD",
                         help="a date closed all day; repeat for several (replaces the list)")
        cmd.add_argument("--always-open", action="store_true",
                         help="no business hours and no holidays")
        cmd.add_argument("--away-after", type=int, metavar="N",
                         help="missed offers in a row that set a member away (0: never)")
    commands.add_parser("remove", help="take it out of routing; its figures stay") \
        .add_argument("name")
    commands.add_parser("list", help="every queue, with its figures")
    parser.set_defaults(func=lambda args: _command(args, cli))
