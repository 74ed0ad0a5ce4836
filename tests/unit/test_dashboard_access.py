"""Sign-in, sessions, CSRF and roles of the dashboard, against the real app and a real
SQLite store (reliability cases R21, R22, R23, R24)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from handoff.agents import AgentRole
from handoff.events import EventHub
from handoff.store.models import AuditEvent
from tests.dashboard_fixtures import (
    PASSWORD,
    Browser,
    Browsers,
    FakeCommands,
    Served,
    cheap_passwords,
    open_store,
    signed_in,
)
from web.dashboard import ROUTE_POLICY, ROUTES, Access, DashboardOptions, Shape, setup_dashboard
from web.dashboard.access import MUTATING_METHODS, ROLE_RANK
from web.dashboard.routes import STATIC_PREFIX
from web.dashboard.sessions import Cookies
from web.ratelimit import LoginThrottle, address_key, login_key

IDENTITIES: tuple[str | None, ...] = (None, "alice", "sam", "ada")  # anonymous, 3 roles


async def audit_actions(served: Served) -> list[tuple[str, str]]:
    async with served.store.engine.connect() as connection:
        rows = await connection.execute(
            select(AuditEvent.actor, AuditEvent.action).order_by(AuditEvent.id)
        )
        return [(row.actor, row.action) for row in rows]


def concrete(path: str, served: Served) -> str:
    path = path.replace("{agent_id}", str(served.people["bob"].id)).replace(
        "{number}", "+33100000000").replace("{address}", "192.0.2.1").replace(
        "{mode}", "listen").replace("{action}", "enable")
    # The after-call and supervisor routes take only a call id shaped like one.
    if path.startswith(("/calls/", "/api/supervisor/", "/api/calls/")) or path.endswith(
            ("/recording.wav", "/peaks")):
        path = path.replace("{call_id}", "00000000-0000-0000-0000-000000000000")
    # Any other row's id: one that does not exist.
    return re.sub(r"\{(?!call_id)\w+_id\}", "999999", path)


def declared_routes(served: Served) -> list[tuple[str, str, Access, Shape, AgentRole | None]]:
    policy = served.app[ROUTE_POLICY]
    return [(method, path, rule.access, rule.shape, rule.role)
            for method, path, rule in policy.rules()]


# ---- sign-in and sessions (R22) ----------------------------------------------------------


async def test_signing_in_sets_an_httponly_strict_session_cookie(browsers: Browsers) -> None:
    browser = browsers()
    response = await browser.login("alice")
    assert response.status == 303
    assert response.headers["Location"] == "/"
    cookie = next(c for c in response.cookies.values() if c.key == "sb_session")
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # served over plain http in this test


def test_over_https_the_cookies_are_secure_and_host_bound() -> None:
    cookies = Cookies(secure=True)
    response = web.Response()
    cookies.set(response, cookies.session, "token")
    header = response.cookies["__Host-sb_session"].OutputString()
    assert header.startswith("__Host-sb_session=token")
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header


async def test_signing_in_again_issues_a_new_session_and_the_old_one_is_refused(
    browsers: Browsers,
) -> None:
    browser = await signed_in(browsers, "alice")
    first = browser.session_cookie()
    # A second sign-in from the same browser (another tab's stale login form).
    browser.http.cookie_jar.update_cookies({"sb_login": "form-token"})
    async with browser.http.post(
        "/login", data={"login": "alice", "password": PASSWORD, "csrf_token": "form-token"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
    second = browser.session_cookie()
    assert first and second and first != second
    replay = browsers()
    replay.http.cookie_jar.update_cookies({"sb_session": first})
    assert (await replay.post_json("/api/duty", {"on_duty": True}, csrf="x")).status == 401


async def test_a_session_id_planted_before_sign_in_is_never_the_signed_in_one(
    browsers: Browsers,
) -> None:
    browser = browsers()
    browser.http.cookie_jar.update_cookies({"sb_session": "planted-by-attacker"})
    response = await browser.login("alice")
    assert response.status == 303
    assert response.cookies["sb_session"].value not in ("", "planted-by-attacker")


async def test_a_cookie_replayed_after_logout_is_refused(browsers: Browsers) -> None:
    browser = await signed_in(browsers, "alice")
    old = browser.session_cookie()
    async with browser.http.post("/logout", data={"csrf_token": browser.csrf},
                                 allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/login"
    replay = browsers()
    replay.http.cookie_jar.update_cookies({"sb_session": old or ""})
    async with replay.http.get("/", allow_redirects=False) as page:
        assert page.status == 303
        assert page.headers["Location"].startswith("/login")
    assert (await replay.post_json("/api/duty", {"on_duty": True},
                                   csrf=browser.csrf)).status == 401


async def test_a_wrong_password_and_an_unknown_login_get_the_same_answer(
    browsers: Browsers, served: Served,
) -> None:
    wrong = await browsers().login("alice", "not the password")
    unknown = await browsers().login("nobody", PASSWORD)
    assert wrong.status == unknown.status == 401
    assert "sb_session" not in wrong.cookies
    assert await audit_actions(served) == [("alice", "login_failed"), ("nobody", "login_failed")]


async def test_a_login_post_without_its_form_token_is_refused(served: Served,
                                                              browsers: Browsers) -> None:
    browser = browsers()
    async with browser.http.post("/login", data={"login": "alice", "password": PASSWORD},
                                 allow_redirects=False) as response:
        assert response.status == 403
        assert "sb_session" not in response.cookies


async def test_after_sign_in_only_local_paths_are_followed(browsers: Browsers) -> None:
    browser = browsers()
    async with browser.http.get("/login?next=//evil.example/x") as page:
        assert 'value="/"' in await page.text()
    async with browser.http.get("/admin", allow_redirects=False) as page:
        assert page.status == 303
        assert page.headers["Location"] == "/login?next=/admin"


async def test_pages_carry_the_security_headers(browsers: Browsers) -> None:
    browser = await signed_in(browsers, "alice")
    async with browser.http.get("/") as page:
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Cache-Control"] == "no-store"


# ---- throttling (R23) --------------------------------------------------------------------


async def test_five_failed_sign_ins_then_429_with_retry_after_even_with_the_password(
    browsers: Browsers,
) -> None:
    browser = browsers()
    for _ in range(5):
        assert (await browser.login("alice", "guess")).status == 401
    blocked = await browser.login("alice")
    assert blocked.status == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 300


async def test_one_persons_failed_sign_ins_do_not_lock_out_a_colleague_at_the_same_address(
    browsers: Browsers,
) -> None:
    # An office behind one NAT: every agent's sign-in comes from the same address.
    bob, alice = browsers(), browsers()
    for _ in range(5):
        assert (await bob.login("bob", "guess")).status == 401
    assert (await bob.login("bob")).status == 429
    assert (await alice.login("alice")).status == 303


def test_the_throttle_counts_per_login_at_an_address_and_per_address_and_forgets() -> None:
    now = [0.0]
    throttle = LoginThrottle(failures=5, address_failures=20, window_s=300,
                             clock=lambda: now[0])
    office, home = "10.0.0.9", "10.0.0.10"
    for _ in range(5):
        throttle.failed(login_key("bob", office), address_key(office))
    # Bob from the office is blocked; Bob at home and Alice in the office are not.
    assert throttle.retry_after(login_key("bob", office), address_key(office)) == 300
    assert throttle.retry_after(login_key("bob", home), address_key(home)) is None
    assert throttle.retry_after(login_key("alice", office), address_key(office)) is None
    # A sweep of many logins from one address blocks the address, whoever tries next.
    for n in range(15):
        throttle.failed(login_key(f"user{n}", office), address_key(office))
    assert throttle.retry_after(login_key("alice", office), address_key(office)) == 300
    now[0] = 299.5
    assert throttle.retry_after(address_key(office)) == 1
    now[0] = 300.0
    assert throttle.retry_after(login_key("bob", office), address_key(office)) is None


def test_the_throttle_stays_bounded_under_an_address_sweep() -> None:
    throttle = LoginThrottle(max_keys=100)
    for n in range(10_000):
        throttle.failed(f"address:10.{n // 256}.{n % 256}.1")
    assert len(throttle._failed) == 100


# ---- CSRF on every state-changing route (R21) --------------------------------------------


def _mutating_session_routes(served: Served) -> list[tuple[str, str]]:
    return [(method, path) for method, path, access, _shape, _role in declared_routes(served)
            if method in MUTATING_METHODS and access is Access.SESSION]


async def test_every_state_changing_route_refuses_a_missing_or_wrong_csrf_token(
    served: Served, browsers: Browsers,
) -> None:
    admin = await signed_in(browsers, "ada")
    routes = _mutating_session_routes(served)
    assert {path for _m, path in routes} >= {"/api/duty", "/logout",
                                              "/api/handoffs/{handoff_id}/accept"}
    for method, path in routes:
        url = concrete(path, served)
        for token in ("", "wrong-token"):
            async with admin.http.request(
                method, url, json={}, allow_redirects=False,
                headers={"X-CSRF-Token": token} if token else {},
            ) as response:
                assert response.status == 403, (method, path, token)
                if response.content_type == "application/json":
                    assert (await response.json())["error"] == "csrf"
    # Still signed in: the refused logout did nothing.
    assert (await admin.post_json("/api/duty", {"on_duty": True})).status == 200


async def test_a_state_changing_request_from_another_origin_is_refused_with_a_good_token(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    response = await agent.post_json("/api/duty", {"on_duty": True},
                                     headers={"Origin": "https://evil.example"})
    assert response.status == 403
    assert (await response.json())["error"] == "cross_origin"


async def test_the_logout_form_carries_the_token_as_a_hidden_field(browsers: Browsers) -> None:
    agent = await signed_in(browsers, "alice")
    async with agent.http.get("/") as page:
        html = await page.text()
    assert f'name="csrf_token" value="{agent.csrf}"' in html


# ---- roles (R24) -------------------------------------------------------------------------


def test_every_registered_route_is_in_the_access_policy(served: Served) -> None:
    policy = served.app[ROUTE_POLICY]
    unlisted = [(route.method, route.resource.canonical if route.resource else "?")
                for route in served.app.router.routes() if policy.rule_for_route(route) is None]
    assert unlisted == []
    # And the other way round: every line of the route table is served, so the policy
    # test of each role above walks the routes that really exist.
    registered = {(route.method, route.resource.canonical)
                  for route in served.app.router.routes() if route.resource is not None}
    canonical = web.UrlDispatcher()  # the table's paths as aiohttp names them
    missing = [(route.method, route.path) for route in ROUTES
               if (route.method, canonical.add_route(route.method, route.path, route.handler)
                   .resource.canonical) not in registered]  # type: ignore[union-attr]
    assert missing == []


async def test_a_route_added_without_a_policy_line_is_refused(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    app = web.Application()
    setup_dashboard(app, store=store, hub=EventHub(), commands=FakeCommands(EventHub()),
                    origin="http://127.0.0.1:1", secure_cookies=False,
                    options=DashboardOptions(passwords=cheap_passwords()))

    async def forgotten(_request: web.Request) -> web.Response:
        return web.Response(text="secret")

    app.router.add_get("/forgotten", forgotten)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get("/forgotten")
        assert response.status == 403
        assert (await response.json())["error"] == "not_in_policy"
    finally:
        await client.close()
        await store.engine.dispose()


def _expected(identity: str | None, served: Served, *, access: Access, shape: Shape,
              role: AgentRole | None, method: str) -> str:
    if access is Access.PUBLIC:
        return "open"
    if identity is None:
        return "login_page" if shape is Shape.PAGE and method == "GET" else "401"
    assert role is not None
    held = served.people[identity].role
    return "open" if ROLE_RANK[held] >= ROLE_RANK[role] else "403"


async def _identity(browsers: Browsers, identity: str | None) -> Browser:
    return browsers() if identity is None else await signed_in(browsers, identity)


@pytest.mark.parametrize("identity", IDENTITIES, ids=lambda i: i or "anonymous")
async def test_role_matrix_every_route_answers_as_the_policy_says(
    identity: str | None, served: Served, browsers: Browsers,
) -> None:
    routes = declared_routes(served)
    # Logout last: it ends the session the other cells use.
    routes.sort(key=lambda r: r[1] == "/logout")
    assert len(routes) == len(ROUTES) + 1  # + the static files
    for method, path, access, shape, role in routes:
        browser = await _identity(browsers, identity)
        url = concrete(path, served) + ("/dashboard.css" if path == STATIC_PREFIX else "")
        if (method, path) == ("POST", "/login"):
            # Public, guarded by its own form token instead of a session (login CSRF).
            response = await browsers().login(identity or "bob")
            assert response.status == 303, (identity, method, path, response.status)
            continue
        async with browser.http.request(
            method, url, json={"role": "agent"}, allow_redirects=False,
            headers={"X-CSRF-Token": browser.csrf, "Origin": served.origin},
        ) as response:
            expected = _expected(identity, served, access=access, shape=shape, role=role,
                                 method=method)
            cell = (identity, method, path, response.status)
            if expected == "open":
                # Let through, and answered: a 500 is no answer (a route that crashes
                # on a request its role may send is a fault, not an access decision).
                # A 503 is one: what the route needs (the PBX) is not running here.
                assert response.status not in (401, 403, 500), cell
            elif expected == "login_page":
                assert response.status == 303, cell
                assert response.headers["Location"].startswith("/login"), cell
            else:
                assert response.status == int(expected), cell


# ---- audit -------------------------------------------------------------------------------


async def test_login_logout_duty_and_role_changes_are_audited(
    served: Served, browsers: Browsers,
) -> None:
    agent = await signed_in(browsers, "alice")
    admin = await signed_in(browsers, "ada")
    assert (await agent.post_json("/api/duty", {"on_duty": True})).status == 200
    bob = served.people["bob"].id
    response = await admin.post_json(f"/api/admin/agents/{bob}/role", {"role": "supervisor"})
    assert response.status == 200
    async with agent.http.post("/logout", data={"csrf_token": agent.csrf},
                               allow_redirects=False) as response:
        assert response.status == 303
    assert await audit_actions(served) == [
        ("alice", "login"),
        ("ada", "login"),
        ("alice", "duty_change"),
        ("ada", "role_change"),
        ("alice", "logout"),
        # Signed out everywhere while on duty: taken off duty, so no card waits on her.
        ("alice", "duty_change"),
    ]


async def test_an_admin_cannot_change_their_own_role(served: Served, browsers: Browsers) -> None:
    admin = await signed_in(browsers, "ada")
    response = await admin.post_json(f"/api/admin/agents/{served.people['ada'].id}/role",
                                     {"role": "agent"})
    assert response.status == 409
    assert (await response.json())["error"] == "own_role"
