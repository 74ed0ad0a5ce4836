"""The example AI engine (tests/external_engine.py): the README prints its core word for
word, it shares no code with Switchboard, and its command line takes a token, refuses a
missing or wrong one clearly, and serves AudioSocket against the real control API."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import signal
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from handoff.assistants import EngineKind
from handoff.events import EventHub
from handoff.store import Store, create_store_engine, upgrade_to_head
from tests.ai_api_fixtures import FakeCommands
from web.ai_api import API_PREFIX, hash_control_token, new_control_token, setup_ai_api

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "tests" / "external_engine.py"
BEGINS = "# ---- the README's example begins here ----\n"
ENDS = "# ---- the README's example ends here ----\n"
SECTION = "## Connecting your own AI engine\n"


def engine_core() -> str:
    text = ENGINE.read_text()
    core = text[text.index(BEGINS) + len(BEGINS):text.index(ENDS)]
    return core.rstrip(" \n") + "\n"


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert len(blocks) == 1, "the section has one Python example"
    return str(blocks[0])


def test_the_readme_prints_the_example_engines_core_word_for_word() -> None:
    assert readme_example() == engine_core()
    compile(readme_example(), "README example", "exec")


def test_the_example_engine_uses_nothing_of_switchboard() -> None:
    # It proves the contract only if it is written against the README, not our code.
    imported = set()
    for node in ast.walk(ast.parse(ENGINE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"aiohttp", "__future__"} <= set(sys.stdlib_module_names)


async def engine_process(*args: str, token: str | None) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_AI_TOKEN"}
    if token is not None:
        env["SWITCHBOARD_AI_TOKEN"] = token  # as the README says: not on the command line
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ENGINE), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_the_engine_without_a_token_says_how_to_give_one() -> None:
    engine = await engine_process("--api", "http://127.0.0.1:9/api/ai/v1", token=None)
    _, err = await asyncio.wait_for(engine.communicate(), 30)
    assert engine.returncode == 2
    assert b"--token TOKEN or SWITCHBOARD_AI_TOKEN" in err


TOKEN = new_control_token()


@pytest.fixture
async def control_api(tmp_path: Path) -> AsyncIterator[str]:
    """The real control API on 127.0.0.1 with one assistant whose token is TOKEN."""
    db = create_store_engine(f"sqlite:///{tmp_path}/switchboard.db")
    await upgrade_to_head(db)
    store = Store(db)
    async with store.transaction() as tx:
        await tx.assistants.create(name="sales", numbers=["2100"], engine=EngineKind.AUDIOSOCKET,
                                   engine_address="127.0.0.1:9092",
                                   control_token_hash=hash_control_token(TOKEN))
    app = web.Application()
    setup_ai_api(app, store=store, commands=FakeCommands(store), hub=EventHub())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(API_PREFIX))
    finally:
        await server.close()
        await db.dispose()


async def test_the_engine_with_a_wrong_token_stops_naming_the_refusal(control_api: str) -> None:
    engine = await engine_process("--api", control_api, "--listen", "127.0.0.1:0",
                                  token=new_control_token())
    _, err = await asyncio.wait_for(engine.communicate(), 30)
    assert engine.returncode == 1
    assert b"the control API refused the event socket: 401" in err


async def line(engine: asyncio.subprocess.Process) -> dict[str, Any]:
    assert engine.stdout is not None
    got = await asyncio.wait_for(engine.stdout.readline(), 30)
    assert got, "the engine stopped"
    found: dict[str, Any] = json.loads(got)
    return found


async def test_the_engine_speaks_on_a_stream_and_asks_for_a_person_when_a_key_is_pressed(
    control_api: str,
) -> None:
    engine = await engine_process("--api", control_api, "--listen", "127.0.0.1:0",
                                  token=TOKEN)
    try:
        assert await line(engine) == {"type": "ready", "assistant": "sales", "calls": []}
        listening = await line(engine)
        host, port = listening["address"].rsplit(":", 1)
        # Asterisk's side of a call: the stream id first, then the caller's key.
        reader, writer = await asyncio.open_connection(host, int(port))
        call_id = uuid.uuid4()
        writer.write(struct.pack(">BH", 0x01, 16) + call_id.bytes)
        kind, length = struct.unpack(">BH", await reader.readexactly(3))
        assert (kind, length) == (0x10, 320)  # 20 ms of audio back
        writer.write(struct.pack(">BH", 0x03, 1) + b"0")
        assert await line(engine) == {"type": "audiosocket", "call_id": str(call_id)}
        # No such call in Switchboard: the API refuses it, and the engine says so.
        asked = await line(engine)
        assert (asked["type"], asked["call_id"], asked["status"]) == (
            "asked", str(call_id), 404)
        writer.write(struct.pack(">BH", 0x00, 0))  # hang-up
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)  # the engine closes its side: EOF
        writer.close()
    finally:
        engine.send_signal(signal.SIGINT)  # Ctrl-C
        await asyncio.wait_for(engine.communicate(), 30)
    assert engine.returncode == 0
