"""Values that go into Asterisk's configuration files, checked first.

Asterisk object names, usernames, passwords and patterns go into .conf files verbatim,
so each is checked here and a wrong one is reported by the setting's name instead of
as a half-loaded Asterisk.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path

# Asterisk object names, usernames and passwords go into .conf files verbatim; a
# newline, ';' or ']' would let a value open a section of its own.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
_SECRET = re.compile(r"^[A-Za-z0-9_.~+/=-]{8,128}$")
# Dialplan patterns we accept for inbound numbers: digits, X/Z/N and [ranges], with
# an optional leading '+'. No '.' or '!' wildcards: an open pattern plus a number
# forwarded to Dial is how toll fraud starts.
_PATTERN = re.compile(r"^(\+?[0-9]{1,20}|_\+?[0-9XZN\[\]\-]{1,30})$")
_HOST = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
# A digest realm goes between quotes in every 401: a word or a domain name.
_REALM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A carrier account's user name is often a number (4420...) or has dots or a '+'.
_SIP_USER = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
# Carriers hand out passwords with punctuation in them; what stays out is what pjsip.conf
# would read as something else: whitespace, ';' (a comment), '[' ']' (a section), and
# quotes and backslashes (escapes).
_TRUNK_SECRET = re.compile(r"^[A-Za-z0-9_.~+/=!@#$%^&*()?,:{}<>|-]{6,128}$")
# The From user of our requests to a trunk: the caller ID the carrier shows (a number),
# or an account name some carriers expect there.
_FROM_USER = re.compile(r"^(\+?[0-9]{3,15}|[A-Za-z][A-Za-z0-9_-]{0,39})$")
# Codecs a trunk may offer; Debian's Asterisk has a translator for each.
TRUNK_CODECS = ("ulaw", "alaw", "g722", "gsm", "opus")


class ConfigValueError(ValueError):
    """A value cannot go into Asterisk's configuration; ``key`` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def matching(pattern: re.Pattern[str], key: str, value: str, problem: str) -> str:
    """``value`` if ``pattern`` accepts it; otherwise ``problem`` says what is wrong."""
    if not pattern.match(value):
        raise ConfigValueError(key, problem)
    return value


def check_name(key: str, value: str) -> str:
    return matching(_NAME, key, value, f"{value!r} must start with a letter and hold only "
                     "letters, digits, '-' or '_'")


def check_secret(key: str, value: str) -> str:
    return matching(_SECRET, key, value,
                     "must be 8 to 128 characters of letters, digits and . _ ~ + / = -")


def check_pattern(key: str, value: str) -> str:
    return matching(_PATTERN, key, value, f"{value!r} is not a strict number pattern: use "
                     "digits (e.g. 2000) or _ with X, Z, N and [ranges] (e.g. _20XX); '.' and "
                     "'!' are refused")


def check_sip_user(key: str, value: str) -> str:
    return matching(_SIP_USER, key, value, f"{value!r} must be 1 to 64 letters, digits or "
                     "'.', '_', '+', '-'")


def check_trunk_secret(key: str, value: str) -> str:
    # The value itself never goes into the message: it is a carrier's password.
    return matching(_TRUNK_SECRET, key, value, "must be 6 to 128 characters: letters, digits "
                     "and _ . ~ + / = ! @ # $ % ^ & * ( ) ? , : { } < > | - (no spaces, "
                     "quotes, ';' or brackets)")


def check_from_user(key: str, value: str) -> str:
    return matching(_FROM_USER, key, value, f"{value!r} is neither a number (3 to 15 digits, "
                     "an optional leading +) nor a name")


def check_codecs(key: str, values: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [c for c in values if c not in TRUNK_CODECS]
    if unknown or not values:
        raise ConfigValueError(key, f"{', '.join(unknown) or 'none given'}: choose from "
                               + ", ".join(TRUNK_CODECS))
    return values


def check_port(key: str, value: int) -> int:
    if not 1 <= value <= 65535:
        raise ConfigValueError(key, f"{value} is not a port number (1-65535)")
    return value


def check_host(key: str, value: str) -> str:
    return matching(_HOST, key, value, f"{value!r} is not a host name or address")


def check_ip(key: str, value: str) -> str:
    """One IPv4 or IPv6 address, as an ACL line takes it."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigValueError(key, f"{value!r} is not an IP address") from None


def check_realm(key: str, value: str) -> str:
    return matching(_REALM, key, value, f"{value!r} must be a word or a domain name "
                     "(letters, digits, '.', '-', '_')")


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s+.+?-----END CERTIFICATE-----", re.DOTALL)


def check_certificate(cert_key: str, cert: str, key_key: str, key: str) -> ssl.SSLContext:
    """A TLS server context presenting ``cert`` (PEM, the chain after the certificate)
    with ``key``; a file that cannot be read, holds no certificate, or a key that is not
    the certificate's or has a passphrase (no server can ask anyone for one at start-up)
    raises :class:`ConfigValueError` naming the setting (``cert_key`` or ``key_key``)."""
    first_certificate(cert_key, cert)
    if b"ENCRYPTED" in read_file(key_key, key):
        raise ConfigValueError(key_key, f"{key} is protected by a passphrase; give the key "
                               "without one (openssl pkey -in KEY -out NEW)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise ConfigValueError(key_key, f"{key} is not the private key of {cert} "
                               f"({exc.reason or exc})") from None
    return context


def first_certificate(cert_key: str, cert: str) -> str:
    """The first PEM certificate in the file ``cert`` (setting ``cert_key``)."""
    found = _PEM_CERTIFICATE.search(read_file(cert_key, cert))
    if found is None:
        raise ConfigValueError(cert_key, f"{cert} holds no PEM certificate "
                               "(-----BEGIN CERTIFICATE-----)")
    return found.group().decode("ascii")


def read_file(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigValueError(key, f"{path} cannot be read ({exc.strerror or exc})") from None
