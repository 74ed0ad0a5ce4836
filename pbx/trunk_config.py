"""Trunks in Asterisk's terms: what pjsip.conf needs of a carrier (``SipTrunk``), and
of a PBX that registers to us as its carrier (``TrunkAccount``, the test carrier's side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pbx.config_values import (
    ConfigValueError,
    check_codecs,
    check_from_user,
    check_host,
    check_name,
    check_port,
    check_sip_user,
    check_trunk_secret,
)


@dataclass(frozen=True)
class SipTrunk:
    """A carrier (or a test carrier): recognised by its address and port (``auth="ip"``),
    or registering to it with a digest account (``auth="register"``), when calls from
    the carrier are recognised by the ``line`` parameter our registration left in the
    carrier's contact for us."""

    name: str
    host: str
    port: int = 5060
    # The From user of our calls out: the caller ID the carrier shows.
    from_user: str = ""
    auth: Literal["ip", "register"] = "ip"
    username: str = ""
    password: str = field(default="", repr=False)
    codecs: tuple[str, ...] = ("ulaw", "alaw")
    # OPTIONS every this many seconds, so a carrier that stops answering shows as
    # unreachable; 0: never (a trunk nobody may send a packet to, as in tests).
    qualify_s: int = 0

    def check(self, key: str) -> None:
        check_name(f"{key}.name", self.name)
        check_host(f"{key}.host", self.host)
        check_port(f"{key}.port", self.port)
        if self.from_user:
            check_from_user(f"{key}.caller_id", self.from_user)
        check_codecs(f"{key}.codecs", self.codecs)
        if not 0 <= self.qualify_s <= 3600:
            raise ConfigValueError(f"{key}.qualify_s", f"{self.qualify_s}: 0 to 3600 seconds")
        if self.auth == "register":
            if not self.username or not self.password:
                raise ConfigValueError(f"{key}.username", "a registering trunk needs a "
                                       "username and a password")
            check_sip_user(f"{key}.username", self.username)
            check_trunk_secret(f"{key}.password", self.password)
        elif self.auth == "ip":
            if self.username or self.password:
                raise ConfigValueError(f"{key}.auth", "a trunk recognised by its address "
                                       "has no username or password (auth = register)")
        else:
            raise ConfigValueError(f"{key}.auth", f"{self.auth!r}: ip or register")


@dataclass(frozen=True)
class TrunkAccount:
    """A PBX that registers to this Asterisk as its carrier (the test carrier's side of a
    registering trunk): challenged on every request, reached only where it registered."""

    username: str
    password: str = field(repr=False)


def to_register_again(before: tuple[SipTrunk, ...],
                      after: tuple[SipTrunk, ...]) -> list[SipTrunk]:
    """Registering trunks kept by name whose settings changed: a registration whose own
    section did not change keeps its binding (and its old credentials) until it
    expires after a reload, so a new password is tried at once only if asked."""
    kept = {t.name for t in before}
    return [t for t in after if t.auth == "register" and t.name in kept and t not in before]
