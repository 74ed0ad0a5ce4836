"""Assistant tokens: one random token per assistant; only its SHA-256 is stored
(``assistants.control_token_hash``). A plain digest is enough because the token is 32
random bytes, not a password: there is no dictionary to guess from, so a slow salted
hash would buy nothing, and a digest lets us compare with every stored hash in
constant time."""

from __future__ import annotations

import hashlib
import secrets


def new_control_token() -> str:
    """A fresh assistant token: shown once to the admin, only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_control_token(token: str) -> str:
    """What ``assistants.control_token_hash`` holds for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()
