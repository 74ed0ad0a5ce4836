"""Dashboard passwords: argon2id hashes, verified off the event loop."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# A password longer than this is refused before hashing: argon2 itself copes, but an
# attacker should not be able to make each failed login cost megabytes of hashing input.
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    # The stored hash uses weaker parameters than today's: store a fresh one.
    needs_rehash: bool = False


class Passwords:
    """Hash and check passwords; the default parameters are argon2-cffi's (RFC 9106 low
    memory profile). Tests pass a cheaper hasher so a login takes milliseconds."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Checked against when the login is unknown, so an unknown login takes as long
        # as a wrong password and response times do not reveal which logins exist.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            raise ValueError(f"a password has 1 to {MAX_PASSWORD_LENGTH} characters")
        return self._hasher.hash(password)

    async def verify(self, stored: str | None, password: str) -> Verdict:
        if len(password) > MAX_PASSWORD_LENGTH:
            return Verdict(False)
        # argon2 deliberately costs tens of milliseconds of CPU: never on the event loop,
        # where it would delay every call event and WebSocket of the process.
        return await asyncio.to_thread(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> Verdict:
        target = stored or self._decoy
        try:
            self._hasher.verify(target, password)
        except (VerificationError, InvalidHashError):
            return Verdict(False)
        if stored is None:
            return Verdict(False)
        return Verdict(True, self._hasher.check_needs_rehash(stored))
