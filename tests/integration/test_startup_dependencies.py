"""`switchboard run` started while what it depends on is away (R25 of issue 16): it
listens at once, /status answers 503 naming what it waits for and why, every other route
503 "starting", and it comes up by itself once the dependency is back, logging the outage
once when it starts and once when it ends. The dependency is real: PostgreSQL started on
its port only after the product."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest

from tests.dashboard_fixtures import free_port
from tests.postgres_server import private_postgres
from tests.product_run import Product, stopped_after
from tests.waiting import until

pytestmark = pytest.mark.integration


async def answer(product: Product, path: str) -> tuple[int, Any]:
    """The status and JSON body of a GET, or (0, None) while nothing listens."""
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{product.url}{path}") as page:
            text = await page.text()
    except aiohttp.ClientError:
        return 0, None
    try:
        return page.status, json.loads(text)
    except ValueError:
        return page.status, text  # a page


async def test_started_while_the_database_is_down_it_says_so_and_comes_up_when_it_is_back(
    tmp_path: Any,
) -> None:
    pg_port = free_port()
    url = f"postgresql://switchboard@127.0.0.1:{pg_port}/switchboard_test"
    product = Product(tmp_path / "data", free_port(), settings=[f"database.url={url}"])
    with contextlib.ExitStack() as postgres:
        async with stopped_after(product):
            await product.launch()

            async def waiting() -> dict[str, Any] | None:
                status, body = await answer(product, "/status")
                return body if status == 503 and body.get("waiting_for") == "database" \
                    and body.get("reason") != "connecting" else None

            body = await until(waiting, within=60, step=0.2,
                               why="/status never said it waits for the database")
            assert body["status"] == "starting"
            assert "refused" in body["reason"].lower(), body  # why, in the driver's words
            status, page = await answer(product, "/login")
            assert status == 503 and page["waiting_for"] == "database"
            # No crash loop: the same process keeps trying.
            assert product.proc is not None and product.proc.returncode is None

            await asyncio.to_thread(postgres.enter_context, private_postgres(pg_port))

            async def up() -> bool:
                return (await answer(product, "/status"))[0] == 200

            await until(up, within=180, step=0.5, why="it did not come up by itself")
            status, _ = await answer(product, "/login")
            assert status == 200
            output = "".join(product.output)
            assert output.count("start-up waits for the database") == 1, output
            assert output.count("the database is reachable after") == 1, output
            assert "Switchboard is running." in output
        await asyncio.to_thread(postgres.close)
