"""Certificates: the dashboard's HTTPS listener and the PBX's WSS listener.

Browsers grant the microphone only to secure pages and refuse a ws:// socket from an
https page, so an agent on another machine needs both listeners on TLS. The files are
checked when the settings are read: a wrong path, or a key that is not the
certificate's, stops start-up naming the setting, instead of a handshake failing only
once agents connect.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

import aiohttp

from pbx.config_values import ConfigValueError

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s+.+?-----END CERTIFICATE-----", re.DOTALL)


def server_context(section: str, cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context presenting ``cert`` (PEM, the chain after the certificate)
    with ``key``; raises :class:`ConfigValueError` naming ``section.tls_cert`` or
    ``section.tls_key``."""
    _first_certificate(section, cert)
    if b"ENCRYPTED" in _read(f"{section}.tls_key", key):
        # Neither aiohttp nor Asterisk can ask anyone for a passphrase at start-up.
        raise ConfigValueError(f"{section}.tls_key", f"{key} is protected by a passphrase; "
                               "give the key without one (openssl pkey -in KEY -out NEW)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise ConfigValueError(f"{section}.tls_key", f"{key} is not the private key of "
                               f"{cert} ({exc.reason or exc})") from None
    return context


def pinned(cert: str) -> aiohttp.Fingerprint:
    """What a client in this process checks when it talks to our own listener by its
    local address (the receptionist to the AI control API): exactly our certificate.

    The local address is not a name the certificate covers, and a private CA is not in
    the system's trust store; pinning the one certificate needs neither and trusts
    nothing else.
    """
    der = ssl.PEM_cert_to_DER_cert(_first_certificate("server", cert))
    return aiohttp.Fingerprint(hashlib.sha256(der).digest())


def _first_certificate(section: str, cert: str) -> str:
    found = _PEM_CERTIFICATE.search(_read(f"{section}.tls_cert", cert))
    if found is None:
        raise ConfigValueError(f"{section}.tls_cert", f"{cert} holds no PEM certificate "
                               "(-----BEGIN CERTIFICATE-----)")
    return found.group().decode("ascii")


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigValueError(key, f"{path} cannot be read ({exc.strerror or exc})") from None
