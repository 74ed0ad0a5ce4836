"""The dashboard with its after-call, supervisor and admin tools, for unit and e2e tests:
the real app and store, fakes for the controller's live services. The `site` fixture
serves it (the unit and e2e conftests import it)."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handoff.calls import CallEvent, CallOutcome
from handoff.handoffs import HandoffEvent
from handoff.store import NotFound, Store
from handoff.supervision import Mode, SupervisionRefused, Supervisor
from handoff.trunks import Trunk
from pbx.trunk_status import TrunkStatus
from tests.dashboard_fixtures import Served, serve_dashboard
from web.dashboard import DashboardOptions
from web.dashboard.tools import Tools


@dataclass
class FakeSession:
    call_id: str
    supervisor: Supervisor
    mode: Mode | None

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "supervisor_id": self.supervisor.agent_id,
                "mode": self.mode.value if self.mode else None}


@dataclass
class FakeSupervision:
    asked: list[tuple[str, int, Mode]] = field(default_factory=list)
    refuse: SupervisionRefused | None = None
    sessions: dict[tuple[str, int], FakeSession] = field(default_factory=dict)

    async def supervise(self, call_id: str, supervisor: Supervisor, mode: Mode) -> FakeSession:
        if self.refuse is not None:
            raise self.refuse
        self.asked.append((call_id, supervisor.agent_id, mode))
        session = FakeSession(call_id, supervisor, mode)
        self.sessions[(call_id, supervisor.agent_id)] = session
        return session

    async def stop(self, call_id: str, supervisor: Supervisor) -> None:
        if self.sessions.pop((call_id, supervisor.agent_id), None) is None:
            raise NotFound("supervision", call_id)


@dataclass
class FakeCallback:
    key: str
    number: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.key, "number": self.number, "state": "ringing_agent"}


@dataclass
class FakeCallbacks:
    placed: list[tuple[str, int, str]] = field(default_factory=list)
    in_progress: set[str] = field(default_factory=set)  # call ids of call-backs under way
    ended: list[str] = field(default_factory=list)

    async def call_back(self, number: str, *, agent_id: int, endpoint: str,
                        actor: str) -> FakeCallback:
        self.placed.append((number, agent_id, endpoint))
        return FakeCallback(f"cb-{len(self.placed)}", number)

    def of_call(self, call_id: str) -> FakeCallback | None:
        return FakeCallback(call_id, "") if call_id in self.in_progress else None

    async def end(self, call_id: str) -> bool:
        if call_id not in self.in_progress:
            return False
        self.in_progress.discard(call_id)
        self.ended.append(call_id)
        return True


@dataclass
class ToolServed(Served):
    recordings: Path = Path()
    supervision: FakeSupervision = field(default_factory=FakeSupervision)
    callbacks: FakeCallbacks = field(default_factory=FakeCallbacks)
    test_calls: list[str] = field(default_factory=list)
    # One entry per time the admin page asked the PBX to reload its endpoints.
    endpoint_reloads: list[str] = field(default_factory=list)
    # What the PBX would report of each trunk (web.trunk_watch), set by a test.
    trunk_statuses: dict[str, TrunkStatus] = field(default_factory=dict)


# The settings file's trunk, beside those the admin page adds: listed, never changed.
SETTINGS_TRUNK = Trunk("carrier", "192.0.2.1", caller_id="+15550100",
                       patterns=("_NXXNXXXXXX",), source="settings")


async def serve_with_tools(
    folder: Path, *, options: DashboardOptions | None = None,
) -> AsyncIterator[ToolServed]:
    recordings = folder / "recordings"
    recordings.mkdir()
    supervision, callbacks, test_calls = FakeSupervision(), FakeCallbacks(), []
    endpoint_reloads: list[str] = []
    trunk_statuses: dict[str, TrunkStatus] = {}

    async def test_call() -> str:
        test_calls.append("2000")
        return "2000"

    async def endpoints_changed() -> None:
        endpoint_reloads.append("reload")

    tools = Tools(recordings=recordings, supervision=lambda: supervision,
                  callbacks=lambda: callbacks, test_call=test_call,
                  endpoints_changed=endpoints_changed, fixed_trunks=lambda: (SETTINGS_TRUNK,),
                  trunk_statuses=lambda: trunk_statuses)
    async for served in serve_dashboard(folder, options=options, tools=tools):
        yield ToolServed(**vars(served), recordings=recordings, supervision=supervision,
                         callbacks=callbacks, test_calls=test_calls,
                         endpoint_reloads=endpoint_reloads, trunk_statuses=trunk_statuses)


@pytest.fixture
async def site(
    tmp_path: Path, dashboard_options: DashboardOptions | None,
) -> AsyncIterator[ToolServed]:
    async for running in serve_with_tools(tmp_path, options=dashboard_options):
        yield running


async def finished_call(
    store: Store, *, number: str = "+33123456789", agent_id: int | None = None,
    outcome: CallOutcome = CallOutcome.COMPLETED_BY_AGENT, recording: Path | None = None,
    talk_s: float = 0.0,
) -> str:
    """An ended call as the controller leaves it; handled by `agent_id` when given."""
    async with store.transaction() as tx:
        call = await tx.calls.create(caller_number=number, caller_channel_id=f"c-{number}")
        await tx.calls.apply(call.id, CallEvent.ANSWER, bridge_id="b", ai_channel_id="ai")
        if agent_id is not None:
            await tx.calls.apply(call.id, CallEvent.REQUEST_HANDOFF)
            handoff = await tx.handoffs.request(call.id, reason="caller_request")
            await tx.handoffs.apply(handoff.id, HandoffEvent.OFFER)
            # A past call: whether its agent is on duty now is up to each test.
            await tx.handoffs.accept(handoff.id, agent_id, on_duty_only=False)
            await tx.handoffs.apply(handoff.id, HandoffEvent.DIAL_AGENT)
            await tx.handoffs.apply(handoff.id, HandoffEvent.AGENT_ANSWERED)
            await tx.calls.apply(call.id, CallEvent.AGENT_CONNECTED, agent_channel_id="ag")
            await tx.handoffs.apply(handoff.id, HandoffEvent.END)
        await tx.calls.close(call.id, outcome)
        if recording is not None:
            await tx.calls.set_recording(call.id, str(recording))
    return call.id


def write_wav(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    samples = (np.sin(2 * np.pi * 440 * t) * 0.5 * 32767 * np.minimum(1, t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())
    return path

