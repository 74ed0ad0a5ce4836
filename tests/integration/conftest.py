"""Real Asterisk instances for integration tests.

The PBX and the carrier are started once per session (the embedded runtime is built
on first use) and each test is checked afterwards for channels and bridges it left
behind. Nothing here fakes Asterisk.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pbx import runtime
from tests.faults import Baseline, back_to
from tests.integration.asterisk_helpers import assert_quiet
from web.bench.rig import Pair, asterisk_pair

pytestmark = pytest.mark.integration

# More than the 50 calls the old 100-port RTP range carried; few enough to place at once.
PAIR_MAX_CALLS = 60


@pytest.fixture(scope="session")
def installation() -> runtime.Installation:
    # No skip: if Asterisk cannot be had, the integration suite fails and says why.
    return runtime.locate()


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest_asyncio.fixture(scope="session")
async def pair(installation: runtime.Installation, state_dir: Path) -> AsyncIterator[Pair]:
    """A Switchboard PBX and a carrier Asterisk with a SIP trunk between them, each taking
    PAIR_MAX_CALLS calls at once (not the machine's default, so that a test of the limit
    places the same number of calls everywhere)."""
    async with asterisk_pair(installation, state_dir, f"t{os.getpid()}",
                             max_calls=PAIR_MAX_CALLS) as started:
        yield started


@pytest_asyncio.fixture
async def quiet_pair(pair: Pair) -> AsyncIterator[Pair]:
    """The pair, checked after the test: no channel or bridge may be left on either side."""
    yield pair
    await assert_quiet(pair.pbx)
    await assert_quiet(pair.carrier)


@pytest_asyncio.fixture(scope="module")
async def no_leaks(pair: Pair) -> AsyncIterator[None]:
    """R13 for a whole module: this process's descriptors, threads and tasks are back to
    what they were before its first test (the shared pair started first, so it is part
    of the baseline). A module opts in with ``pytest.mark.usefixtures("no_leaks")``."""
    before = Baseline.now()
    yield
    await back_to(before)
