"""`switchboard user`: people (dashboard accounts and their phones) from the server's
command line, and `agent passwd`, the older name of `user passwd`.

Each command is one transaction on the installation's database, audited as "cli"; web.people
does the checking and the audit lines, as for the Admin page. A running Switchboard's PBX
takes a change within its directory check (sessions end on the tabs' next request at once).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from handoff.agents import AgentRole, EndpointKind
from handoff.store import LastAdmin, Removed, Store, Transaction
from handoff.store.models import Agent
from web import people
from web.cli_assistants import Cli
from web.dashboard.passwords import Passwords

PHONES = {"browser": EndpointKind.WEBRTC, "desk": EndpointKind.DESKPHONE}

PersonAct = Callable[[Transaction, Agent], Awaitable[str]]


def _no_such(login: str) -> int:
    print(f"switchboard: no agent with login {login!r}", file=sys.stderr)
    return 2


def _on_person(args: argparse.Namespace, cli: Cli, act: PersonAct) -> int:
    """``act`` on the person ``args.login`` names (not a removed one), then print what it
    says; a refusal (the last admin, a removed person, a bad value) is printed, exit 2."""

    async def on_person(store: Store) -> int:
        try:
            async with store.transaction() as tx:
                agent = await tx.agents.by_login(args.login)
                if agent is None or agent.removed_at is not None:
                    return _no_such(args.login)
                said = await act(tx, agent)
        except (LastAdmin, Removed) as exc:
            print(f"switchboard: {exc}", file=sys.stderr)
            return 2
        except people.PersonRefused as exc:
            print(f"switchboard: {exc.reason}", file=sys.stderr)
            return 2
        print(said)
        return 0

    return cli.run(args, on_person)


def passwd(args: argparse.Namespace, cli: Cli) -> int:
    """A new dashboard password for ``login`` (printed once; stored only as a hash).

    The way back in when the demo passwords printed at first start are lost.
    """

    async def reset(tx: Transaction, agent: Agent) -> str:
        _, password = await people.new_password(tx, Passwords(), agent.id, actor=cli.actor)
        return f"{args.login}: {password}"

    return _on_person(args, cli, reset)


def add(args: argparse.Namespace, cli: Cli) -> int:
    """A new person; prints their one-time password (and a desk phone's SIP account).

    On a fresh installation with the demo off, the first admin comes from here.
    """

    async def adding(store: Store) -> int:
        try:
            async with store.transaction() as tx:
                new = await people.add(
                    tx, Passwords(), login=args.login, display_name=args.name or args.login,
                    role=AgentRole(args.role), endpoint_kind=PHONES[args.phone],
                    actor=cli.actor)
        except people.PersonRefused as exc:
            print(f"switchboard: {exc.reason}", file=sys.stderr)
            return 2
        print(f"{new.agent.login}: {new.password}")
        if new.agent.endpoint_kind is EndpointKind.DESKPHONE:
            print(f"desk phone SIP account: {new.agent.sip_user} / {new.sip_password}")
        print(cli.note)
        return 0

    return cli.run(args, adding)


def change(args: argparse.Namespace, cli: Cli) -> int:
    """disable, enable or remove a person (see web.people)."""

    async def changing(tx: Transaction, agent: Agent) -> str:
        await people.CHANGES[args.user_command](tx, agent.id, actor=cli.actor)
        return f"{args.login}: {args.user_command}d\n{cli.note}"

    return _on_person(args, cli, changing)


def rename(args: argparse.Namespace, cli: Cli) -> int:
    """A person's display name (the login stays: phones and scripts keep working)."""

    async def renaming(tx: Transaction, agent: Agent) -> str:
        await people.rename(tx, agent.id, args.name, actor=cli.actor)
        return f"{args.login}: now {args.name.strip()!r}"

    return _on_person(args, cli, renaming)


def open_line(args: argparse.Namespace, cli: Cli) -> int:
    """Whether a person's auto-answering desk phone keeps an open line on duty."""

    async def changing(tx: Transaction, agent: Agent) -> str:
        await people.set_open_line(tx, agent.id, args.state == "on", actor=cli.actor)
        return f"{args.login}: open line {args.state} (from their next duty on)"

    return _on_person(args, cli, changing)


def listing(args: argparse.Namespace, cli: Cli) -> int:
    async def everyone(store: Store) -> int:
        async with store.transaction() as tx:
            people_now = await tx.agents.all()
        for a in people_now:
            phone = "desk" if a.endpoint_kind is EndpointKind.DESKPHONE else "browser"
            state = "enabled" if a.enabled else "disabled"
            print(f"{a.login}\t{a.role.value}\t{phone}\t{state}\t{a.display_name}")
        return 0

    return cli.run(args, everyone)


def add_parser(sub: argparse._SubParsersAction, cli: Cli) -> None:  # type: ignore[type-arg]
    """`user …` and `agent passwd` under ``sub``."""

    def runs(command: Callable[[argparse.Namespace, Cli], int]) -> Callable[..., int]:
        return lambda args: command(args, cli)

    user = sub.add_parser("user", help="people: dashboard accounts and their phones")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    adding = user_sub.add_parser("add", help="add a person and print their one-time password")
    adding.add_argument("login")
    adding.add_argument("--role", required=True, choices=[r.value for r in AgentRole])
    adding.add_argument("--phone", choices=sorted(PHONES), default="browser",
                        help="browser: the dashboard's softphone; desk: a SIP desk phone")
    adding.add_argument("--name", help="display name (default: the login)")
    adding.set_defaults(func=runs(add))
    for action, what in (("disable", "no sign-in, sessions ended, SIP account refused"),
                         ("enable", "allow a disabled person back in"),
                         ("remove", "disable and drop from the lists; history stays")):
        changing = user_sub.add_parser(action, help=what)
        changing.add_argument("login")
        changing.set_defaults(func=runs(change))
    renaming = user_sub.add_parser("rename", help="change a person's display name")
    renaming.add_argument("login")
    renaming.add_argument("name")
    renaming.set_defaults(func=runs(rename))
    user_sub.add_parser("list", help="everyone not removed").set_defaults(func=runs(listing))
    line = user_sub.add_parser(
        "open-line", help="a desk phone that auto-answers (Call-Info answer-after=0) "
        "keeps an open line on duty (on), or rings for each call (off, the default)")
    line.add_argument("login")
    line.add_argument("state", choices=["on", "off"])
    line.set_defaults(func=runs(open_line))
    # `agent passwd` is the older name, kept for scripts that use it.
    for parent in (user_sub, sub.add_parser("agent", help="older name of `user passwd`")
                   .add_subparsers(dest="agent_command", required=True)):
        resetting = parent.add_parser("passwd", help="set a new password and print it once")
        resetting.add_argument("login")
        resetting.set_defaults(func=runs(passwd))
