"""People: adding, renaming, disabling, enabling and removing dashboard accounts, and
their new passwords.

The admin page and the `switchboard user` command share these, so both check a login
the same way, create the same SIP credentials and end the same sessions; each writes its
audit lines under the acting admin's login (or "cli").
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from handoff.agents import AgentRole, EndpointKind
from handoff.store import Transaction
from handoff.store.models import Agent

if TYPE_CHECKING:
    # Only a type here: importing the dashboard package from this module, which the
    # dashboard's own admin views import, would be a cycle.
    from web.dashboard.passwords import Passwords

# A login becomes part of the SIP user name (agent-<login>) and of pjsip.conf section
# names: letters, digits and a few separators only.
_LOGIN = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
LOGIN_RULE = "login is 2-32 lowercase letters, digits, '.', '_' or '-', starting with a letter"


class PersonRefused(Exception):
    """Bad input or a clash: `error` is the API's error code, the message its reason."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason

    @property
    def status(self) -> int:
        """The HTTP status: a bad value is the request's fault (400); anything else
        (a login taken, a removed person, a phone that cannot) clashes with what is (409)."""
        return 400 if self.error == "bad_request" else 409


@dataclass(frozen=True, slots=True)
class NewPerson:
    agent: Agent
    # Shown once (the store keeps its hash): the admin hands it over.
    password: str
    # Kept readable in the store (Asterisk challenges REGISTER with it); shown for a
    # desk phone's configuration.
    sip_password: str


def check_login(raw: str) -> str:
    login = raw.strip().lower()
    if not _LOGIN.match(login):
        raise PersonRefused("bad_request", LOGIN_RULE)
    return login


def check_display_name(raw: str) -> str:
    name = raw.strip()
    if not name or len(name) > 128:
        raise PersonRefused("bad_request", "display_name is 1-128 characters")
    return name


async def add(
    tx: Transaction, passwords: Passwords, *, login: str, display_name: str,
    role: AgentRole, endpoint_kind: EndpointKind, actor: str, takes_calls: bool = True,
) -> NewPerson:
    """A new person with generated SIP credentials and a one-time dashboard password."""
    login = check_login(login)
    name = check_display_name(display_name)
    if await tx.agents.by_login(login) is not None:
        raise PersonRefused("login_taken", f"there is already an agent {login!r}")
    if await tx.agents.by_sip_user(f"agent-{login}") is not None:
        raise PersonRefused("login_taken", f"the SIP user agent-{login} is taken")
    password = secrets.token_urlsafe(12)
    sip_password = secrets.token_urlsafe(18)
    agent = await tx.agents.create(
        login=login, display_name=name, role=role, sip_user=f"agent-{login}",
        sip_password=sip_password, endpoint_kind=endpoint_kind,
        password_hash=passwords.hash(password), takes_calls=takes_calls,
    )
    await tx.audit.record(actor, "agent_created", f"agent:{agent.id}",
                          {"login": login, "role": role.value, "endpoint": endpoint_kind.value,
                           "takes_calls": takes_calls})
    return NewPerson(agent, password, sip_password)


async def rename(tx: Transaction, agent_id: int, display_name: str, *, actor: str) -> Agent:
    """The name cards, boards and the audit log show; the login (and the SIP user made
    from it) stays, so phones and scripts keep working."""
    name = check_display_name(display_name)
    before = await tx.agents.get(agent_id)
    if before.removed_at is not None:
        raise PersonRefused("removed", f"{before.login} was removed")
    old = before.display_name
    agent = await tx.agents.set_display_name(agent_id, name)
    await tx.audit.record(actor, "agent_renamed", f"agent:{agent_id}", {"from": old, "to": name})
    return agent


async def set_open_line(tx: Transaction, agent_id: int, open_line: bool, *,
                        actor: str) -> Agent:
    """Whether a person's desk phone keeps an open line on duty. Only for a SIP desk
    phone that auto-answers on request (Call-Info answer-after=0): one that does not
    would ring at the desk each time the line opens. Browser phones keep one by the
    server's desk.open_line."""
    agent = await tx.agents.get(agent_id)
    if agent.removed_at is not None:
        raise PersonRefused("removed", f"{agent.login} was removed")
    if agent.endpoint_kind is not EndpointKind.DESKPHONE:
        raise PersonRefused("not_a_desk_phone",
                            f"{agent.login} has a browser phone: its open line is the "
                            "server's desk.open_line setting")
    return await tx.agents.set_open_line(agent_id, open_line, actor=actor)


async def new_password(
    tx: Transaction, passwords: Passwords, agent_id: int, *, actor: str,
) -> tuple[Agent, str]:
    """A new dashboard password, returned once (the store keeps its hash). Every session
    of the person ends in the same transaction: whoever knew the old password, and any
    browser signed in with it, is out."""
    agent = await tx.agents.get(agent_id)
    if agent.removed_at is not None:
        raise PersonRefused("removed", f"{agent.login} was removed")
    password = secrets.token_urlsafe(12)
    agent = await tx.agents.set_password_hash(agent_id, passwords.hash(password))
    await tx.sessions.delete_for_agent(agent_id)
    await tx.audit.record(actor, "password_reset", f"agent:{agent_id}")
    return agent, password


async def disable(tx: Transaction, agent_id: int, *, actor: str) -> Agent:
    """Off duty, no card, no endpoint (once the PBX re-renders), and every session
    ended in the same transaction: the next request from any of their tabs is signed out."""
    agent = await tx.agents.disable(agent_id, actor=actor)
    await tx.sessions.delete_for_agent(agent_id)
    return agent


async def remove(tx: Transaction, agent_id: int, *, actor: str) -> Agent:
    agent = await tx.agents.remove(agent_id, actor=actor)
    await tx.sessions.delete_for_agent(agent_id)
    return agent


async def enable(tx: Transaction, agent_id: int, *, actor: str) -> Agent:
    return await tx.agents.enable(agent_id, actor=actor)


# What the admin page and the CLI call by name.
CHANGES: dict[str, Callable[..., Awaitable[Agent]]] = {
    "disable": disable, "enable": enable, "remove": remove,
}
