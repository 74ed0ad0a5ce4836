"""Dashboard sessions, kept in the database so that logout means logged out.

The cookie carries only a random token; the store keeps its SHA-256, the agent, a CSRF
token and the expiry. Signing out, an expiry, or an admin revoking the agent deletes
the row, and a replayed copy of the old cookie then proves nothing. A signed cookie
could not offer that: it stays valid until it expires, wherever it was copied to.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from handoff.agents import AgentRole, Presence
from handoff.store import Store
from handoff.store.models import Agent
from handoff.store.transitions import utc_now

TOKEN_BYTES = 32
# Writing last_seen on every request would turn each page load and API call into a
# database write; once a minute is plenty to run an idle timeout in minutes.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class SessionTimes:
    # An agent's shift: after this the browser signs in again, however active.
    absolute: timedelta = timedelta(hours=12)
    # A desk left alone this long is signed out (an open dashboard tab counts as
    # activity only while it makes requests; the WebSocket alone does not extend it).
    idle: timedelta = timedelta(hours=2)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in agent behind a request, as the session row last said."""

    session_hash: str
    csrf_token: str
    agent_id: int
    login: str
    display_name: str
    role: AgentRole
    on_duty: bool
    presence: Presence
    # False: no duty switch or presence in their top bar (they supervise or administer).
    takes_calls: bool = True

    @classmethod
    def of(cls, session_hash: str, csrf_token: str, agent: Agent) -> Viewer:
        return cls(
            session_hash=session_hash, csrf_token=csrf_token, agent_id=agent.id,
            login=agent.login, display_name=agent.display_name, role=agent.role,
            on_duty=agent.on_duty, presence=agent.presence, takes_calls=agent.takes_calls,
        )


@dataclass(frozen=True, slots=True)
class Cookies:
    """Cookie names and flags. Over https the names carry the `__Host-` prefix, which
    browsers only accept with Secure, Path=/ and no Domain: a sibling sub-domain then
    cannot plant a session or login cookie for the dashboard's host."""

    secure: bool

    @property
    def session(self) -> str:
        return ("__Host-" if self.secure else "") + "sb_session"

    @property
    def login(self) -> str:
        return ("__Host-" if self.secure else "") + "sb_login"

    def set(self, response: web.StreamResponse, name: str, value: str) -> None:
        # Strict: the browser never sends it on a request another site starts, which
        # with the CSRF token and the Origin check makes forged requests doubly dead.
        response.set_cookie(
            name, value, path="/", httponly=True, secure=self.secure, samesite="Strict"
        )

    def clear(self, response: web.StreamResponse, name: str) -> None:
        response.del_cookie(name, path="/", secure=self.secure, samesite="Strict")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def tokens_match(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


class Sessions:
    def __init__(
        self,
        store: Store,
        *,
        times: SessionTimes | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self.times = times or SessionTimes()
        self._clock = clock

    async def start(self, agent_id: int, *, replacing: str | None = None) -> tuple[str, Viewer]:
        """A new session (a new id, always) for a successful login.

        Whatever session the browser held before is deleted in the same transaction:
        an id known before the login (planted, or read off a shared machine) never
        becomes a signed-in one.
        """
        token, csrf = new_token(), new_token()
        now = self._clock()
        async with self._store.transaction() as tx:
            if replacing:
                await tx.sessions.delete(hash_token(replacing))
            row = await tx.sessions.create(
                id_hash=hash_token(token), agent_id=agent_id, csrf_token=csrf,
                expires_at=now + min(self.times.idle, self.times.absolute),
            )
            agent = await tx.agents.get(agent_id)
        return token, Viewer.of(row.id_hash, csrf, agent)

    async def resolve(self, token: str | None) -> Viewer | None:
        if not token or len(token) > 256:
            return None
        id_hash = hash_token(token)
        now = self._clock()
        async with self._store.transaction() as tx:
            found = await tx.sessions.live(id_hash)
            if found is None:
                return None
            row, agent = found
            if agent.password_hash is None or not agent.enabled:
                # An admin disabled the account (from another process, say the CLI):
                # its sessions end with it.
                await tx.sessions.delete(id_hash)
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                expires = min(row.created_at + self.times.absolute, now + self.times.idle)
                await tx.sessions.touch(id_hash, expires_at=expires)
        return Viewer.of(id_hash, row.csrf_token, agent)

    async def end(self, session_hash: str) -> int:
        """Delete the session; returns how many other live sessions the agent keeps."""
        async with self._store.transaction() as tx:
            found = await tx.sessions.live(session_hash)
            await tx.sessions.delete(session_hash)
            if found is None:
                return 0
            return await tx.sessions.count_for_agent(found[1].id)

    async def still_live(self, session_hashes: list[str]) -> set[str]:
        async with self._store.transaction() as tx:
            return await tx.sessions.live_hashes(session_hashes)

    async def purge_expired(self) -> int:
        async with self._store.transaction() as tx:
            return await tx.sessions.delete_expired()
