"""The role matrix of the composed product (R24) beyond the dashboard's own routes: the
health and metrics endpoints and the AI control API, served by ``build_app`` itself on a
real SQLite store. Asterisk is left out (its two start-up steps are taken away), so
/status has something true to say: the controller is not up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from handoff.settings import load
from tests.dashboard_fixtures import Browser, free_port
from web.ai_api import API_PREFIX
from web.app import build_app, controller_ctx, telephony_ctx
from web.services import SERVICES
from web.startup import START_STAGES

CALL = "00000000-0000-0000-0000-000000000000"
# Every AI API route, with a body its handler would take from a real engine.
AI_ROUTES = [("POST", f"/calls/{CALL}/transcript", {"speaker": "ai", "text": "hello"}),
             ("POST", f"/calls/{CALL}/handoff", {"reason": "caller_asked", "summary": "x"}),
             ("POST", f"/calls/{CALL}/end", {}),
             ("GET", "/events", None)]
IDENTITIES = (None, "ada", "admin")  # anonymous, an agent, an admin (the demo's people)


@pytest.fixture
async def product(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    port = free_port()
    settings = load(environ={}, overrides={"data_dir": str(tmp_path),
                                           "server.port": str(port)})
    app = build_app(settings)
    app[START_STAGES][:] = [(waits_for, stage) for waits_for, stage in app[START_STAGES]
                            if stage not in (telephony_ctx, controller_ctx)]
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.wait_for(app[SERVICES].startup.settled.wait(), 30)
    try:
        yield settings.origin, app[SERVICES].demo_credentials
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("identity", IDENTITIES, ids=lambda i: i or "anonymous")
async def test_status_metrics_and_the_ai_api_answer_every_role_as_designed(
    identity: str | None, product: tuple[str, dict[str, str]],
) -> None:
    origin, passwords = product
    browser = Browser(origin)
    try:
        if identity is not None:
            assert (await browser.login(identity, passwords[identity])).status == 303
        # Open to all (a load balancer's probe, Prometheus): answered, never a 500.
        async with browser.http.get("/status") as status:
            assert status.status == 503  # no controller: degraded, and says why
            assert (await status.json())["ari_events"] == "starting"
        async with browser.http.get("/metrics") as metrics:
            assert metrics.status == 200
            scraped = await metrics.text()
            assert "switchboard_asterisk_up" in scraped
            # Today's key figures, read from the store for the scrape (the demo's
            # receptionist has taken no call yet).
            assert 'switchboard_kpi_today_calls{assistant="receptionist"} 0.0' in scraped
        # The AI API takes an assistant's token and nothing else: no dashboard session
        # of any role opens it, nor a made-up token.
        for method, path, body in AI_ROUTES:
            for token in (None, "made-up"):
                headers = {"X-CSRF-Token": browser.csrf, "Origin": origin}
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                async with browser.http.request(method, f"{API_PREFIX}{path}", json=body,
                                                headers=headers) as answer:
                    assert answer.status == 401, (identity, method, path, token,
                                                  answer.status)
    finally:
        await browser.close()
