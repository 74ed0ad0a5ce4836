"""The demo: what a first start puts in an empty database (the receptionist at 2000 and
three people to sign in as), and the voice of the demo carrier's test caller."""

from __future__ import annotations

import secrets
from pathlib import Path

from handoff.agents import AgentRole, EndpointKind
from handoff.assistants import EngineKind, FallbackKind
from handoff.receptionist import make_prompts
from handoff.settings import Settings
from handoff.store import Store
from pbx.demo_caller import DEMO_CALLER_WORDS
from web.ai_api import hash_control_token, new_control_token
from web.dashboard.passwords import Passwords

CARRIER_TRUNK = "carrier"
RECEPTIONIST = "receptionist"
DEMO_NUMBER = "2000"
DEMO_AGENTS = (("ada", "Ada Lovelace", AgentRole.AGENT), ("grace", "Grace Hopper",
               AgentRole.AGENT), ("admin", "Admin", AgentRole.ADMIN))


async def seed_demo(store: Store) -> dict[str, str]:
    """The demo on an empty database: the receptionist at 2000 and three people.

    Returns the dashboard passwords it created (printed once, stored only hashed).
    """
    created: dict[str, str] = {}
    async with store.transaction() as tx:
        if await tx.assistants.by_name(RECEPTIONIST) is None:
            await tx.assistants.create(
                name=RECEPTIONIST, numbers=[DEMO_NUMBER], engine=EngineKind.BUILTIN,
                control_token_hash=hash_control_token(new_control_token()),
                accept_timeout_s=45, fallback_kind=FallbackKind.AI_CALLBACK,
            )
        for login, name, role in DEMO_AGENTS:
            if await tx.agents.by_login(login) is not None:
                continue
            password = secrets.token_urlsafe(9)
            await tx.agents.create(
                login=login, display_name=name, role=role, sip_user=f"agent-{login}",
                sip_password=secrets.token_urlsafe(18), endpoint_kind=EndpointKind.WEBRTC,
                password_hash=hash_password(password),
            )
            created[login] = password
    return created


def hash_password(password: str) -> str:
    return Passwords().hash(password)


def demo_caller_voice(settings: Settings) -> Path:
    """The test caller's words, spoken once by espeak-ng next to the receptionist's
    prompts (blocking the first time: call it at set-up, or via ``to_thread``)."""
    spoken = make_prompts(settings.data_path / "prompts", texts={"test-caller": DEMO_CALLER_WORDS})
    return spoken["test-caller"]
