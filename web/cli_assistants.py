"""`switchboard assistant`: assistants from the server's command line.

Each command is one transaction on the installation's database, audited as "cli"
(web.assistants does the checking and the audit lines, as for the admin page). The
command line writes the database only: a running Switchboard applies the change within
web.telephony.DIRECTORY_CHECK_S (its PBX reloads the dialplan; calls up go on).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from handoff.assistants import EngineKind, FallbackKind, HandoffLevel
from handoff.hours import Hours
from handoff.menus import Menu
from handoff.store import Removed, Store, Transaction
from handoff.store.models import Assistant
from handoff.topics import Topic, topics_of
from web import assistants


@dataclass(frozen=True)
class Cli:
    """What the `switchboard` command lends: a way to run on the installation's store,
    who the audit log names, and what to say about a running Switchboard."""

    run: Callable[[argparse.Namespace, Callable[[Store], Awaitable[int]]], int]
    actor: str
    note: str


Act = Callable[[argparse.Namespace, Cli, Transaction, Assistant | None], Awaitable[int]]


def _in_transaction(args: argparse.Namespace, cli: Cli, act: Act) -> int:
    """``act(args, tx, the named assistant or None)`` in one transaction; a refusal is
    printed with its reason (exit 2), and nothing is written."""

    async def run(store: Store) -> int:
        try:
            async with store.transaction() as tx:
                found = await tx.assistants.by_name(args.name) if "name" in args else None
                if "name" in args and args.assistant_command != "add" and (
                        found is None or found.removed_at is not None):
                    print(f"switchboard: no assistant {args.name!r}", file=sys.stderr)
                    return 2
                return await act(args, cli, tx, found)
        except (assistants.AssistantRefused, Removed) as exc:
            print(f"switchboard: {getattr(exc, 'reason', exc)}", file=sys.stderr)
            return 2

    return cli.run(args, run)


def _rules(args: argparse.Namespace, current: Assistant | None) -> assistants.Rules | None:
    """--fallback KIND says what applies; --fallback-number alone means a number (''
    alone: the AI takes a call-back), as before --fallback existed."""
    fallback = args.fallback_number
    kind = args.fallback or (None if fallback is None else (
        FallbackKind.NUMBER.value if fallback else FallbackKind.AI_CALLBACK.value))
    return assistants.rules_from({
        "handoff_level": args.handoff_level, "accept_timeout_s": args.accept_timeout,
        "fallback_number": fallback, "fallback_kind": kind,
    }, current)


def _topics(args: argparse.Namespace) -> list[Topic] | None:
    """--topic NAME=phrase,phrase (repeated: the list given replaces the topics), or
    --no-topics; None when neither is given."""
    if args.no_topics:
        if args.topic:
            raise assistants.AssistantRefused("bad_topic", "--topic or --no-topics, not both")
        return []
    return None if args.topic is None else assistants.parse_topics(args.topic)


def _hours(args: argparse.Namespace, current: Assistant | None) -> Hours | None:
    """--hours SPAN and --holiday DATE (each repeated: the ones given replace the list),
    or --always-open; None when none is given."""
    if args.always_open:
        if args.hours or args.holiday:
            raise assistants.AssistantRefused("bad_hours",
                                              "--hours/--holiday or --always-open, not both")
        return Hours()
    return assistants.hours_from({"hours": args.hours, "holidays": args.holiday}, current)


def _menu(args: argparse.Namespace, current: Assistant | None) -> Menu | None:
    """--menu-prompt TEXT and --menu KEY=assistant:NAME|KEY=queue:NAME (repeated: the
    keys given replace the menu's), or --no-menu; None when none is given."""
    if args.no_menu:
        if args.menu or args.menu_prompt:
            raise assistants.AssistantRefused("bad_menu", "--menu or --no-menu, not both")
        return Menu()
    return assistants.menu_from({"menu_prompt": args.menu_prompt, "menu": args.menu}, current)


def _announcements(args: argparse.Namespace) -> dict[str, str] | None:
    """--announce MOMENT=words (repeated: the moments given replace them all), or
    --no-announcements; None when neither is given."""
    if args.no_announcements:
        if args.announce:
            raise assistants.AssistantRefused("bad_announcement",
                                              "--announce or --no-announcements, not both")
        return {}
    return assistants.announcements_from({"announcements": args.announce})


def _print_issued(issued: assistants.Issued, cli: Cli) -> None:
    a = issued.assistant
    print(f"{a.name}: numbers {' '.join(issued.numbers) or '(none)'}; engine "
          f"{a.engine_address or a.engine.value}; handoff level {a.handoff_level.value}")
    for topic in topics_of(a):
        print(f"  restricted topic {topic.name}: {', '.join(topic.phrases)}")
    menu = Menu.of(a)
    if menu.active:
        print(f"  menu \"{menu.prompt}\": {', '.join(menu.lines())}")
    for moment, words in (a.announcements or {}).items():
        print(f"  at {moment}: \"{words}\"")
    if a.hours or a.holidays:
        print(f"  open {'; '.join(a.hours) or 'every day'}"
              + (f"; closed {' '.join(a.holidays)}" if a.holidays else ""))
    if issued.token is not None:
        print(f"control token (shown once): {issued.token}")
    elif a.engine is EngineKind.BUILTIN:
        print("control token: held by the built-in receptionist")
    print(cli.note)


async def _assistant_add(
    args: argparse.Namespace, cli: Cli, tx: Transaction, _: Assistant | None,
) -> int:
    issued = await assistants.add(tx, name=args.name, numbers=args.number or [],
                                  engine=args.engine, actor=cli.actor, rules=_rules(args, None),
                                  topics=_topics(args) or [], hours=_hours(args, None),
                                  menu=_menu(args, None),
                                  announcements=_announcements(args))
    _print_issued(issued, cli)
    return 0


async def _assistant_edit(
    args: argparse.Namespace, cli: Cli, tx: Transaction, a: Assistant | None,
) -> int:
    assert a is not None
    _print_issued(await assistants.edit(tx, a.id, actor=cli.actor, numbers=args.number,
                                        engine=args.engine, rules=_rules(args, a),
                                        topics=_topics(args), hours=_hours(args, a),
                                        menu=_menu(args, a),
                                        announcements=_announcements(args)), cli)
    return 0


async def _assistant_token(
    args: argparse.Namespace, cli: Cli, tx: Transaction, a: Assistant | None,
) -> int:
    assert a is not None
    print(f"{a.name}: new control token (shown once; the old one no longer works): "
          f"{await assistants.rotate_token(tx, a.id, actor=cli.actor)}")
    return 0


async def _assistant_change(
    args: argparse.Namespace, cli: Cli, tx: Transaction, a: Assistant | None,
) -> int:
    assert a is not None
    await assistants.CHANGES[args.assistant_command](tx, a.id, actor=cli.actor)
    print(f"{a.name}: {args.assistant_command}d")
    print(cli.note)
    return 0


async def _assistant_list(
    args: argparse.Namespace, cli: Cli, tx: Transaction, _: Assistant | None,
) -> int:
    numbers = await tx.assistants.numbers()
    for a in await tx.assistants.listed():
        v = assistants.view(a, numbers.get(a.id, []))
        state = "enabled" if a.enabled else "disabled"
        topics = " ".join(t["name"] for t in v["restricted_topics"]) or "-"
        print(f"{a.name}\t{' '.join(v['numbers']) or '-'}\t{v['engine']}\t{state}\t"
              f"{v['handoff_level']}\t{v['accept_timeout_s']}s\t{v['fallback_kind']}\t"
              f"{v['fallback_number'] or '-'}\t"
              f"{topics}")
    return 0


ACTS: dict[str, Act] = {
    "add": _assistant_add, "edit": _assistant_edit, "token": _assistant_token,
    "list": _assistant_list, **dict.fromkeys(assistants.CHANGES, _assistant_change),
}


def add_parser(sub: Any, cli: Cli) -> None:
    """``switchboard assistant add|edit|token|disable|enable|remove|list``."""
    parser = sub.add_parser("assistant", help="assistants: AI engines, their numbers, tokens")
    commands = parser.add_subparsers(dest="assistant_command", required=True)
    for action, what in (("add", "add an assistant and print its control token once"),
                         ("edit", "change numbers (the list given replaces them), engine or "
                                  "handoff rules")):
        cmd = commands.add_parser(action, help=what)
        cmd.add_argument("name")
        cmd.add_argument("--number", action="append", metavar="N",
                         help="a number it answers (digits, or _ with X, Z, N, [ranges]); "
                              "repeat for several")
        cmd.add_argument("--engine", required=action == "add", metavar="builtin|HOST:PORT",
                         help="the built-in receptionist, or your engine's AudioSocket address")
        cmd.add_argument("--handoff-level", choices=[h.value for h in HandoffLevel])
        cmd.add_argument("--accept-timeout", type=int, metavar="S",
                         help="seconds a card is offered before the fallback")
        cmd.add_argument("--fallback", choices=[f.value for f in FallbackKind],
                         help="what applies when nobody can take the caller (out of hours, "
                              "nobody free, nobody in time): a number (--fallback-number), "
                              "the AI takes a call-back, or a voicemail, which appears as a "
                              "call-back with the message to play")
        cmd.add_argument("--fallback-number", metavar="N",
                         help="where callers go when nobody takes them ('' : the AI keeps "
                              "them and a callback is noted)")
        cmd.add_argument("--topic", action="append", metavar="NAME=PHRASE,PHRASE",
                         help="a restricted topic and the phrases that bring it up (a caller "
                              "who says one gets a person whatever the handoff level); "
                              "repeat for several: the topics given replace the list")
        cmd.add_argument("--no-topics", action="store_true",
                         help="remove every restricted topic")
        cmd.add_argument("--hours", action="append", metavar="'DAYS HH:MM-HH:MM'",
                         help="business hours in the site's zone, e.g. 'mon-fri 09:00-17:00'; "
                              "out of them the fallback applies at once; repeat for several: "
                              "the spans given replace the list")
        cmd.add_argument("--holiday", action="append", metavar="YYYY-MM-DD",
                         help="a date closed all day; repeat for several (replaces the list)")
        cmd.add_argument("--always-open", action="store_true",
                         help="no business hours and no holidays")
        cmd.add_argument("--menu-prompt", metavar="TEXT",
                         help="what callers hear before the AI, e.g. 'Press 1 for sales'")
        cmd.add_argument("--menu", action="append", metavar="KEY=assistant:NAME|queue:NAME",
                         help="a key of the DTMF menu and where it leads; repeat for several "
                              "(the keys given replace the menu's)")
        cmd.add_argument("--no-menu", action="store_true",
                         help="no menu: the AI answers at once")
        cmd.add_argument("--announce", action="append", metavar="MOMENT=WORDS",
                         help="what the caller is told when a person joins, at handover, "
                              "takeover or transfer; repeat for several (the moments given "
                              "replace them all; one left out is silence)")
        cmd.add_argument("--no-announcements", action="store_true",
                         help="silence at every moment: the person simply speaks")
    for action, what in (("token", "issue a new control token (printed once); the old one "
                                   "stops working at once"),
                         ("disable", "stop answering its numbers (calls up go on)"),
                         ("enable", "answer its numbers again"),
                         ("remove", "disable, free its numbers, refuse its token; history "
                                    "stays")):
        commands.add_parser(action, help=what).add_argument("name")
    commands.add_parser("list", help="every assistant not removed")
    parser.set_defaults(
        func=lambda args: _in_transaction(args, cli, ACTS[args.assistant_command]))
