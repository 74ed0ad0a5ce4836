"""Agents on other machines: the dashboard's certificate settings, HTTPS serving, and
the agent's own address behind a reverse proxy (server.trusted_proxies), against the
real dashboard app. Addresses in headers are documentation ranges; every connection
stays on loopback."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from sqlalchemy import select

from handoff import tls
from handoff.settings import SettingsError, load
from handoff.store.models import AuditEvent
from tests.certificates import Certificates, private_ca
from tests.dashboard_fixtures import PASSWORD, Browser, Served, free_port, serve_dashboard
from web.app import build_app
from web.dashboard.typedefs import DASHBOARD, DashboardOptions
from web.proxies import forwarded, real_client

AGENT = "203.0.113.7"  # the agent's machine, as the proxy reports it
COLLEAGUE = "203.0.113.8"  # another agent behind the same proxy


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return private_ca(tmp_path_factory.mktemp("tls"), "desk.test", "127.0.0.1")


def tls_settings(certificates: Certificates, **more: str) -> dict[str, str]:
    return {"server.tls_cert": str(certificates.cert),
            "server.tls_key": str(certificates.key), **more}


# ---- certificate settings ------------------------------------------------------------


def test_https_gives_an_https_origin_secure_cookies_and_the_pbx_the_same_certificate(
    certificates: Certificates, tmp_path: Path,
) -> None:
    settings = load(environ={}, overrides=tls_settings(
        certificates, **{"server.port": "8443", "data_dir": str(tmp_path)}))
    assert settings.origin == "https://127.0.0.1:8443"
    # The receptionist reaches the API on this machine, over the same TLS.
    assert settings.local_url == "https://127.0.0.1:8443"
    # An https page may not open ws://: the PBX's WSS listener gets the same pair.
    assert settings.pbx_certificate == (str(certificates.cert), str(certificates.key))
    dashboard = build_app(settings)[DASHBOARD]
    assert dashboard.origin == "https://127.0.0.1:8443"
    assert dashboard.cookies.secure and dashboard.cookies.session == "__Host-sb_session"


def test_without_a_certificate_the_dashboard_stays_plain_http_on_loopback() -> None:
    settings = load(environ={})
    assert settings.origin == "http://127.0.0.1:8080"
    assert settings.pbx_certificate is None


@pytest.mark.parametrize(("given", "named"), [
    ({"server.tls_cert": "{cert}"}, r"^server\.tls_key: tls_cert and tls_key go together"),
    ({"server.tls_key": "{key}"}, r"^server\.tls_cert: tls_cert and tls_key go together"),
    ({"server.tls_cert": "{missing}", "server.tls_key": "{key}"},
     r"^server\.tls_cert: .*missing\.pem cannot be read \(No such file or directory\)"),
    ({"server.tls_cert": "{key}", "server.tls_key": "{key}"},
     r"^server\.tls_cert: .*switchboard\.key holds no PEM certificate"),
    ({"server.tls_cert": "{cert}", "server.tls_key": "{ca_key}"},
     r"^server\.tls_key: .*ca\.key is not the private key of .*switchboard\.pem"),
    ({"asterisk.tls_cert": "{cert}", "asterisk.tls_key": "{missing}"},
     r"^asterisk\.tls_key: .*missing\.pem cannot be read"),
    ({"server.trusted_proxies": "10.0.0.0/8,proxy.lan"},
     r"^server\.trusted_proxies\[1\]: 'proxy\.lan' is not an address or a network"),
])
def test_a_wrong_certificate_setting_stops_start_up_naming_the_key(
    certificates: Certificates, given: dict[str, str], named: str,
) -> None:
    paths = {"cert": certificates.cert, "key": certificates.key,
             "ca_key": certificates.ca.with_suffix(".key"),
             "missing": certificates.cert.with_name("missing.pem")}
    overrides = {k: v.format(**{n: str(p) for n, p in paths.items()})
                 for k, v in given.items()}
    with pytest.raises(SettingsError, match=named):
        load(environ={}, overrides=overrides)


def test_an_asterisk_someone_else_runs_keeps_its_certificate_on_its_own_machine() -> None:
    settings = load(environ={}, overrides={
        "asterisk.source": "http://pbx.lan:8088/ari", "asterisk.tls_cert": "/etc/pbx/c.pem",
        "asterisk.tls_key": "/etc/pbx/k.pem"})
    assert settings.pbx_certificate == ("/etc/pbx/c.pem", "/etc/pbx/k.pem")


async def _serve_https(certificates: Certificates) -> AsyncIterator[str]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls.server_context(
        "server", str(certificates.cert), str(certificates.key))).start()
    try:
        yield f"https://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_a_browser_that_trusts_the_ca_gets_the_page_and_the_receptionist_its_pin(
    certificates: Certificates, tmp_path: Path,
) -> None:
    async for url in _serve_https(certificates):
        trusting = ssl.create_default_context(cafile=str(certificates.ca))
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=trusting) as page:
                assert await page.text() == "hello"
            # The in-process receptionist: our own certificate, pinned, by local address.
            async with http.get(url, ssl=tls.pinned(str(certificates.cert))) as page:
                assert page.status == 200
            # A client trusting only the system's CAs refuses a private CA's certificate.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(url)
            # ... and the pin refuses any other certificate.
            other = private_ca(tmp_path / "other", "desk.test", "127.0.0.1")
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                await http.get(url, ssl=tls.pinned(str(other.cert)))


# ---- the agent's address behind a proxy ------------------------------------------------


@pytest.fixture
async def behind_proxy(tmp_path: Path) -> AsyncIterator[Served]:
    """The dashboard behind a proxy on this machine (127.0.0.1 is the trusted proxy); an
    address is blocked after five failed sign-ins, whatever the logins."""
    async for running in serve_dashboard(tmp_path, trusted_proxies=("127.0.0.0/8",),
                                         options=DashboardOptions(address_failures=5)):
        yield running


@pytest.fixture
async def elsewhere_proxy(tmp_path: Path) -> AsyncIterator[Served]:
    """The dashboard trusting a proxy on another machine: a loopback peer is not it."""
    async for running in serve_dashboard(tmp_path, trusted_proxies=("192.0.2.10",),
                                         options=DashboardOptions(address_failures=5)):
        yield running


async def audited(served: Served, action: str) -> list[str]:
    async with served.store.engine.connect() as connection:
        rows = await connection.execute(select(AuditEvent.detail).where(
            AuditEvent.action == action).order_by(AuditEvent.id))
        return [row.detail["address"] for row in rows]


async def sign_in(served: Served, login: str, password: str, *, through: str | None = None,
                  proto: str | None = None) -> int:
    headers = {"X-Forwarded-For": through} if through else {}
    if proto:
        headers["X-Forwarded-Proto"] = proto
    browser = Browser(served.origin, headers=headers)
    try:
        return (await browser.login(login, password)).status
    finally:
        await browser.close()


async def test_directly_connected_the_peer_is_audited_and_a_forged_header_ignored(
    served: Served,
) -> None:
    # No proxy is trusted (the default): a header naming someone else changes nothing.
    assert await sign_in(served, "alice", PASSWORD, through=AGENT) == 303
    assert await sign_in(served, "bob", "guess", through=AGENT) == 401
    assert await audited(served, "login") == ["127.0.0.1"]
    assert await audited(served, "login_failed") == ["127.0.0.1"]


async def test_behind_a_trusted_proxy_the_agents_own_address_is_audited_and_throttled(
    behind_proxy: Served,
) -> None:
    # nginx appends the address it saw to what the client sent: the left part is forged.
    through = f"198.51.100.99, {AGENT}"
    assert await sign_in(behind_proxy, "alice", PASSWORD, through=through) == 303
    assert await audited(behind_proxy, "login") == [AGENT]
    # Five wrong passwords from the agent's machine (for five logins, so only the
    # address counts) block that machine, not everyone behind the proxy.
    for login in ("bob", "sam", "ada", "nobody", "someone"):
        assert await sign_in(behind_proxy, login, "guess", through=through) == 401
    assert await audited(behind_proxy, "login_failed") == [AGENT] * 5
    assert await sign_in(behind_proxy, "bob", PASSWORD, through=AGENT) == 429
    assert await sign_in(behind_proxy, "bob", PASSWORD, through=COLLEAGUE) == 303
    # A request from the proxy's own host (a health check) is its own client.
    assert await sign_in(behind_proxy, "sam", PASSWORD) == 303
    assert await audited(behind_proxy, "login") == [AGENT, COLLEAGUE, "127.0.0.1"]


async def test_an_untrusted_peer_cannot_name_another_address_to_dodge_the_throttle(
    elsewhere_proxy: Served,
) -> None:
    for n, login in enumerate(("bob", "sam", "ada", "nobody", "someone")):
        assert await sign_in(elsewhere_proxy, login, "guess", through=f"203.0.113.{n}") == 401
    assert await audited(elsewhere_proxy, "login_failed") == ["127.0.0.1"] * 5
    assert await sign_in(elsewhere_proxy, "alice", PASSWORD, through=COLLEAGUE) == 429


async def test_a_trusted_proxy_sending_garbage_gets_a_400_that_says_why(
    behind_proxy: Served,
) -> None:
    browser = Browser(behind_proxy.origin, headers={"X-Forwarded-For": "unknown"})
    try:
        async with browser.http.get("/login") as page:
            assert page.status == 400
            assert "X-Forwarded-For from a trusted proxy: 'unknown'" in (page.reason or "")
    finally:
        await browser.close()
    assert await audited(behind_proxy, "login") == []


@pytest.mark.parametrize(("peer", "headers", "seen"), [
    ("127.0.0.1", {}, ("127.0.0.1", "http")),
    ("127.0.0.1", {"X-Forwarded-For": AGENT, "X-Forwarded-Proto": "https"}, (AGENT, "https")),
    # Two trusted hops (a load balancer, then nginx): the first untrusted from the right.
    ("127.0.0.1", {"X-Forwarded-For": f"{AGENT}, 10.1.2.3"}, (AGENT, "http")),
    # Every hop trusted: the leftmost is the client.
    ("127.0.0.1", {"X-Forwarded-For": "10.1.2.4, 10.1.2.3"}, ("10.1.2.4", "http")),
    ("127.0.0.1", {"X-Forwarded-For": "[2001:db8::7]:51234"}, ("2001:db8::7", "http")),
    ("127.0.0.1", {"X-Forwarded-For": f"{AGENT}:51234"}, (AGENT, "http")),
    ("::ffff:127.0.0.1", {"X-Forwarded-For": AGENT}, (AGENT, "http")),
    ("192.0.2.55", {"X-Forwarded-For": AGENT, "X-Forwarded-Proto": "https"},
     ("192.0.2.55", "http")),
])
async def test_what_the_handlers_see_for_each_peer_and_header(
    peer: str, headers: dict[str, str], seen: tuple[str, str],
) -> None:
    request = make_mocked_request("GET", "/", headers=headers)
    request = request.clone(remote=peer)
    got: list[tuple[str | None, str]] = []

    async def handler(inner: web.Request) -> web.Response:
        got.append((inner.remote, inner.scheme))
        return web.Response()

    await real_client(("127.0.0.0/8", "10.0.0.0/8"))(request, handler)
    assert got == [seen]


def test_a_proxy_scheme_that_is_neither_http_nor_https_is_refused() -> None:
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-Proto": "gopher"})
    with pytest.raises(web.HTTPBadRequest, match="'gopher' is not http or https"):
        forwarded(request, ())
