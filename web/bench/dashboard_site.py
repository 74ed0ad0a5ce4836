"""A dashboard with no telephony behind it: the real app's store seeded with one person
per role, a stand-in for the call controller, cards offered as the controller offers
them, and a cookie-keeping HTTP client. The dashboard benchmark serves it to a thousand
tabs; the dashboard tests build on it (tests/dashboard_fixtures.py)."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from argon2 import PasswordHasher

from handoff.agents import AgentRole
from handoff.calls import CallEvent
from handoff.events import CARDS_TOPIC, EventHub, Offered
from handoff.handoffs import HandoffEvent, HandoffState
from handoff.live import LineRefused
from handoff.store import AlreadyTaken, Store, create_store_engine, upgrade_to_head
from handoff.store.models import Agent, Handoff
from web.dashboard import Passwords

PASSWORD = "correct horse battery staple"
# The people of every board: one per role, and a second agent to lose races.
PEOPLE = {
    "alice": AgentRole.AGENT,
    "bob": AgentRole.AGENT,
    "sam": AgentRole.SUPERVISOR,
    "ada": AgentRole.ADMIN,
}


def cheap_passwords() -> Passwords:
    """argon2id with the smallest cost: the same code path, milliseconds per login."""
    return Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeCommands:
    """Stands in for CallControl: records who accepted what. With a store, the accept is
    decided by the store's own conditional UPDATE (race, duty, targeted cards), as the
    call control decides it; without one, the first agent wins."""

    events: EventHub
    store: Store | None = None
    accepted: list[tuple[int, int]] = field(default_factory=list)
    taken: dict[int, int] = field(default_factory=dict)
    # The call panel's commands, as (command, call id, arguments...).
    panel: list[tuple[object, ...]] = field(default_factory=list)
    # Desk phones the PBX would report unregistered (by SIP user); the others are.
    unregistered: set[str] = field(default_factory=set)
    # Set by a test to hold accepts until it says go (as a slow dial would); every accept
    # that arrived is in `asked`, held or not.
    hold: asyncio.Event | None = None
    asked: list[tuple[int, int]] = field(default_factory=list)

    async def accept(self, handoff_id: int, agent_id: int) -> None:
        self.asked.append((handoff_id, agent_id))
        if self.hold is not None:
            await self.hold.wait()
        if self.store is not None:
            async with self.store.transaction() as tx:
                await tx.handoffs.accept(handoff_id, agent_id)
        elif handoff_id in self.taken:
            raise AlreadyTaken(handoff_id, self.taken[handoff_id], HandoffState.ACCEPTED)
        self.taken[handoff_id] = agent_id
        self.accepted.append((handoff_id, agent_id))

    async def end_call(self, call_id: str) -> None:
        self.panel.append(("end_call", call_id))

    async def return_to_ai(self, call_id: str) -> None:
        self.panel.append(("return_to_ai", call_id))

    async def transfer(self, call_id: str, from_agent: int, to_agent: int, note: str) -> int:
        self.panel.append(("transfer", call_id, from_agent, to_agent, note))
        return 999

    async def transfer_to_queue(self, call_id: str, from_agent: int, queue_id: int,
                                note: str) -> int:
        self.panel.append(("transfer_to_queue", call_id, from_agent, queue_id, note))
        return 998

    async def phone_registered(self, sip_user: str) -> bool | None:
        return sip_user not in self.unregistered

    # No PBX here: no open lines (the desk's Accept path is the ringing one), unless a
    # test turns them on to see which phones are called for one (in `panel`).
    open_lines: bool = False
    line_refused: LineRefused | None = None  # what the next line asked for meets

    async def open_line(self, agent_id: int, sip_user: str, *, desk_phone: bool = False
                        ) -> str:
        if not self.open_lines:
            raise LineRefused("no phone system in this rig")
        if self.line_refused is not None:
            raise self.line_refused
        self.panel.append(("open_line", sip_user, desk_phone))
        return "ringing"

    async def close_line(self, agent_id: int, sip_user: str) -> None:
        if self.open_lines:
            self.panel.append(("close_line", sip_user))


async def open_store(folder: Path) -> Store:
    engine = create_store_engine(f"sqlite:///{folder}/dashboard.db")
    await upgrade_to_head(engine)
    return Store(engine)


async def seed_people(store: Store, passwords: Passwords) -> dict[str, Agent]:
    hashed = passwords.hash(PASSWORD)
    async with store.transaction() as tx:
        return {
            login: await tx.agents.create(
                login=login, display_name=login.capitalize(), sip_user=f"sb-{login}",
                sip_password=f"sip-{login}", role=role, password_hash=hashed,
            )
            for login, role in PEOPLE.items()
        }


async def offer_card(
    store: Store, events: EventHub, *, caller_name: str = "Jeanne Martin",
    caller_number: str = "+33123456789", summary: str = "Disputes an invoice",
    priority: int = 0, target_agent_id: int | None = None, publish: bool = True,
    queue_id: int | None = None,
) -> Handoff:
    """A live call whose caller asked for a person, as the controller leaves it, and the
    "offered" event it publishes."""
    async with store.transaction() as tx:
        call = await tx.calls.create(caller_number=caller_number, caller_name=caller_name,
                                     caller_channel_id=f"chan-{caller_number}")
        await tx.calls.apply(call.id, CallEvent.ANSWER, bridge_id="b", ai_channel_id="ai")
        await tx.calls.apply(call.id, CallEvent.REQUEST_HANDOFF)
        handoff = await tx.handoffs.request(call.id, reason="caller_request", topic="billing",
                                            priority=priority, summary=summary,
                                            target_agent_id=target_agent_id,
                                            queue_id=queue_id)
        handoff = await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)
    if publish:
        events.publish(CARDS_TOPIC, Offered(call.id, handoff.id))
    return handoff


_LOGIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_PAGE_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class Browser:
    """A cookie-keeping HTTP client standing in for one browser profile."""

    def __init__(self, origin: str, headers: dict[str, str] | None = None,
                 verify: ssl.SSLContext | bool = True, *, served_at: str = "") -> None:
        """``origin``: where its requests go. ``served_at``: the origin the dashboard is
        served at when that is not ``origin`` (a cluster's node behind the edge's HTTPS,
        reached directly): sent as Origin, and its secure cookies kept over the node's
        plain HTTP."""
        self.origin = served_at or origin
        self.http = aiohttp.ClientSession(
            base_url=origin, headers=headers, connector=aiohttp.TCPConnector(ssl=verify),
            cookie_jar=aiohttp.CookieJar(
                unsafe=True, treat_as_secure_origin=[origin] if served_at else None))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def login(self, login: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        async with self.http.get("/login") as page:
            token = _LOGIN_TOKEN.search(await page.text())
        assert token is not None
        response = await self.http.post(
            "/login", data={"login": login, "password": password, "csrf_token": token[1],
                            "next": "/"},
            allow_redirects=False,
        )
        response.release()
        if response.status == 303:
            await self.refresh_csrf()
        return response

    async def refresh_csrf(self) -> None:
        async with self.http.get("/") as page:
            found = _PAGE_CSRF.search(await page.text())
        self.csrf = found[1] if found else ""

    def session_cookie(self) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == "sb_session":
                return cookie.value
        return None

    async def post_json(self, path: str, body: object, *, csrf: str | None = None,
                        headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        sent = {"X-CSRF-Token": self.csrf if csrf is None else csrf, **(headers or {})}
        if csrf == "":
            sent.pop("X-CSRF-Token")
        response = await self.http.post(path, json=body, headers=sent, allow_redirects=False)
        await response.read()
        return response
