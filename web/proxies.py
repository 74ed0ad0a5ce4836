"""The agent's own address behind a reverse proxy (server.trusted_proxies).

Behind a proxy every request arrives from the proxy's address: the login throttle would
lock out the whole call centre after one agent's typos, and the audit log would name
the proxy for every sign-in. The proxy says who its client was in X-Forwarded-For, but
so can anyone else: the header is believed only from a trusted proxy's address.

Only the X-Forwarded-* headers are read, not RFC 7239's Forwarded: nginx, HAProxy,
Caddy and Traefik set X-Forwarded-For and pass a Forwarded header from the client
through untouched, so believing Forwarded would let the client name itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def real_client(trusted_proxies: Iterable[str]) -> Middleware:
    """A middleware that gives handlers the agent's address as ``request.remote`` (and
    the scheme the agent used as ``request.scheme``) when a trusted proxy forwarded the
    request; a direct connection keeps its peer."""
    networks = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote
        if peer is not None and _within(peer, networks):
            client, scheme = forwarded(request, networks)
            request = request.clone(remote=client or peer, scheme=scheme or request.scheme)
        return await handler(request)

    return middleware


def forwarded(request: web.Request, networks: tuple[Network, ...]
              ) -> tuple[str | None, str | None]:
    """What a trusted proxy says about its client: (address, scheme), each None when
    it says nothing.

    X-Forwarded-For lists every hop, each proxy appending the address it was connected
    from: walking it from the right, the first address that is not a trusted proxy is
    the client (everything left of it is what that client wrote, and may be forged).
    """
    hops = [h.strip() for v in request.headers.getall(hdrs.X_FORWARDED_FOR, [])
            for h in v.split(",")]
    client: Address | None = None
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # Only a proxy we trust wrote this far right: it is misconfigured, and
            # guessing would throttle or audit the wrong address.
            raise web.HTTPBadRequest(reason=f"X-Forwarded-For from a trusted proxy: {hop!r} "
                                     "is not an address")
        client = address
        if not any(address in n for n in networks):
            break
    protos = [p.strip().lower() for p in request.headers.get(hdrs.X_FORWARDED_PROTO, "")
              .split(",") if p.strip()]
    # The nearest proxy's word: the one connected to us, which we trust.
    scheme = protos[-1] if protos else None
    if scheme not in (None, "http", "https"):
        raise web.HTTPBadRequest(reason=f"X-Forwarded-Proto from a trusted proxy: "
                                 f"{scheme!r} is not http or https")
    return (str(client) if client is not None else None), scheme


def _within(remote: str, networks: tuple[Network, ...]) -> bool:
    address = _address(remote)
    return address is not None and any(address in n for n in networks)


def _address(text: str) -> Address | None:
    """An address as proxies write it: bare, ``[v6]:port`` or ``v4:port``."""
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
