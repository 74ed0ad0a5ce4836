"""Certificates: the dashboard's HTTPS listener and the PBX's WSS listener.

Browsers grant the microphone only to secure pages and refuse a ws:// socket from an
https page, so an agent on another machine needs both listeners on TLS. The files are
checked when the settings are read: a wrong path, or a key that is not the
certificate's, stops start-up naming the setting, instead of a handshake failing only
once agents connect.
"""

from __future__ import annotations

import hashlib
import ssl

import aiohttp

from pbx.config_values import check_certificate, first_certificate


def server_context(section: str, cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context presenting ``cert`` (PEM, the chain after the certificate)
    with ``key``; raises :class:`ConfigValueError` naming ``section.tls_cert`` or
    ``section.tls_key``."""
    return check_certificate(f"{section}.tls_cert", cert, f"{section}.tls_key", key)


def pinned(cert: str) -> aiohttp.Fingerprint:
    """What a client in this process checks when it talks to our own listener by its
    local address (the receptionist to the AI control API): exactly our certificate.

    The local address is not a name the certificate covers, and a private CA is not in
    the system's trust store; pinning the one certificate needs neither and trusts
    nothing else.
    """
    der = ssl.PEM_cert_to_DER_cert(first_certificate("server.tls_cert", cert))
    return aiohttp.Fingerprint(hashlib.sha256(der).digest())

