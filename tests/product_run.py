"""`switchboard run` in its own process for the tests: web.bench.product_run (the cluster
benchmark runs its nodes so too), and the fixture of one product per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.dashboard_fixtures import free_port
from web.bench.product_run import REPO, Product, stopped_after

__all__ = ["REPO", "Product", "product", "stopped_after"]


@pytest_asyncio.fixture
async def product(tmp_path: Path) -> AsyncIterator[Product]:
    async with stopped_after(Product(tmp_path / "data", free_port())) as running:
        yield running
