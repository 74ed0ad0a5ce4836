"""An AI engine that is not ours works a call end to end: real Asterisk on both sides of
the trunk, a real agent's desk phone, the engine on its own AudioSocket listener.

The engine (tests/external_engine.py, the README's example) shares no code with
Switchboard: it parses AudioSocket frames itself and talks to the control API over
plain HTTP with its assistant's token. The agent is tests.sip_phone, a desk phone that
registers to the PBX and answers the INVITE itself. What the engine does is the
caller's choice: a key, or talking long enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from handoff.agents import EndpointKind
from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from tests.external_engine import Engine
from tests.integration.ai_rig import AiRig, ai_rig
from tests.integration.asterisk_helpers import Pair
from tests.sip_phone import SipPhone
from tests.waiting import until
from web.bench.audio import AI_HZ
from web.bench.rig import DESK_PHONE_PASSWORD, DESK_PHONE_SIP_USER

pytestmark = pytest.mark.integration

NEVER_S = 3600.0  # patience for a caller who presses a key instead
PATIENCE_S = 1.0  # how long the caller talks before the engine asks for a person
# How the caller gets the engine to ask for a person, and what the engine writes for it.
TRIGGERS = {"key": (NEVER_S, "pressed 0"), "talking": (PATIENCE_S, "talked for a while")}


@dataclass
class Listening:
    """The controller's side of an engine that runs on its own: the address Asterisk
    dials. The engine learns of calls from its event socket, so there is nothing to tell
    it beforehand."""

    engine: Engine

    @property
    def address(self) -> str:
        return self.engine.address

    def expect_call(self, call_id: str) -> None:
        return None

    async def close(self) -> None:
        await self.engine.close()


@dataclass
class Floor:
    r: AiRig
    engine: Engine
    phone: SipPhone  # Bea's desk phone
    agent_id: int  # Bea
    trigger: str = ""  # a key in TRIGGERS


@contextlib.asynccontextmanager
async def floor(pair: Pair, db: Path, patience_s: float) -> AsyncIterator[Floor]:
    engines: list[Engine] = []

    async def start_engine(api_base: str, token: str) -> Listening:
        # The engine speaks the tone the caller's probe knows as the AI's voice.
        engine = Engine(api_base, token, hz=AI_HZ, patience_s=patience_s)
        await engine.start()
        engines.append(engine)
        return Listening(engine)

    # Ada (the carrier's answer-at-once phone) stays off duty: the agent is Bea.
    async with ai_rig(pair, db, start_engine, agent_on_duty=False) as r:
        async with r.store.transaction() as tx:
            bea = await tx.agents.create(
                login="bea", display_name="Bea", sip_user=DESK_PHONE_SIP_USER,
                sip_password=DESK_PHONE_PASSWORD, endpoint_kind=EndpointKind.DESKPHONE)
            await tx.agents.set_duty(bea.id, True)
        pbx_sip = ("127.0.0.1", pair.pbx.spec.ports.sip)
        async with SipPhone(DESK_PHONE_SIP_USER, DESK_PHONE_PASSWORD, pbx_sip) as phone:
            await until(lambda: r.control.phone_registered(DESK_PHONE_SIP_USER))
            yield Floor(r, engines[0], phone, bea.id)


@pytest_asyncio.fixture(params=list(TRIGGERS))
async def desk(quiet_pair: Pair, tmp_path: Path,
               request: pytest.FixtureRequest) -> AsyncIterator[Floor]:
    patience_s, _ = TRIGGERS[request.param]
    async with floor(quiet_pair, tmp_path / "switchboard.db", patience_s) as f:
        f.trigger = request.param
        yield f


def seen(engine: Engine, call_id: str) -> list[str]:
    """The types of the events the engine's socket brought about one call, in order."""
    return [e["type"] for e in engine.events if e.get("call_id") == call_id]


def event(engine: Engine, kind: str, call_id: str) -> dict[str, Any] | None:
    return next((e for e in engine.events
                 if e["type"] == kind and e.get("call_id") == call_id), None)


async def test_an_external_engine_hands_its_caller_to_a_desk_phone_and_gets_them_back(
    desk: Floor,
) -> None:
    f, why = desk, TRIGGERS[desk.trigger][1]
    r, engine = f.r, f.engine
    assert engine.events[0]["type"] == "ready"
    placed = await r.place_call()
    call_id = placed.call_id
    await until(lambda: event(engine, "call_started", call_id), why="no call_started")
    # Asterisk dialled the engine's listener; the stream's id is the call id.
    await until(lambda: engine.streams == [call_id], why=lambda: f"streams {engine.streams}")
    await r.wait_hears(placed, "ai")  # the engine's voice reaches the caller

    if f.trigger == "key":
        await r.press(placed, "0")  # RFC 4733 over the trunk, a DTMF frame to the engine
    handoff_id = await until(lambda: engine.handoffs.get(call_id),
                             why="the engine never got a handoff")
    assert await r.transcript(call_id) == [("caller", f"({why})"), ("ai", "Connecting you.")]
    async with r.store.transaction() as tx:
        handoff = await tx.handoffs.get(handoff_id)
    assert (handoff.state, handoff.summary) == (
        HandoffState.OFFERED, f"The caller wants a person ({why}).")

    # Bea accepts the card; her desk phone rings and answers; she and the caller hear
    # each other, and the engine is told its leg has left the call.
    await r.control.accept(handoff_id, f.agent_id)
    phone_call = await f.phone.wait_call()
    await f.phone.wait_hears(phone_call, "caller")
    await r.wait_hears(placed, "agent", after=time.monotonic())
    await until(lambda: event(engine, "handoff_connected", call_id),
                why="no handoff_connected")

    # Bea gives the caller back: the PBX hangs up her phone, Asterisk dials the engine
    # again with the same call id, and the caller hears the engine once more.
    returned = time.monotonic()
    await r.control.return_to_ai(call_id)
    await asyncio.wait_for(phone_call.ended.wait(), 5)
    assert phone_call.ended_by == "pbx"
    await until(lambda: event(engine, "returned_to_ai", call_id), why="no returned_to_ai")
    await until(lambda: engine.streams == [call_id, call_id],
                why=lambda: f"streams {engine.streams}")
    await r.wait_hears(placed, "ai", after=returned)

    await r.hang_up(placed)  # the caller is done; waits for the call's end in the store
    await until(lambda: event(engine, "call_ended", call_id), why="no call_ended")
    assert seen(engine, call_id) == [
        "call_started", "handoff_connected", "returned_to_ai", "call_ended"]
    assert engine.handoffs == {call_id: handoff_id}  # it asked once, not again on return
    async with r.store.transaction() as tx:
        call = await tx.calls.get(call_id)
        handoff = await tx.handoffs.get(handoff_id)
    assert (call.state, call.outcome) == (CallState.ENDED, CallOutcome.COMPLETED_BY_AI)
    assert (handoff.state, handoff.accepted_by) == (HandoffState.RETURNED_TO_AI, f.agent_id)
