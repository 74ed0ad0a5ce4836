"""Where a browser softphone registers: the PBX's SIP WebSocket, as the page must dial it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from web.dashboard.typedefs import DASHBOARD

# Addresses a server binds to that a browser cannot dial: the page's own host is used.
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", "[::]"})


def softphone_url(request: web.Request) -> str | None:
    """The PBX's SIP WebSocket as this browser must dial it, or None while no PBX runs.

    Asterisk bound to every address (0.0.0.0) is reached at the host the page itself
    was loaded from: the dashboard and the PBX share a machine.
    """
    settings = request.app[DASHBOARD].softphone
    url = settings.websocket_url() if settings is not None else None
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.hostname in _ANY_ADDRESS:
        host = request.url.host or "127.0.0.1"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def websocket_origin(url: str) -> str:
    """What the page's Content-Security-Policy must allow for `url` (connect-src)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
