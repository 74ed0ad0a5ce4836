"""Calls: the ledger row every call gets from its first Stasis event to its outcome."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TypedDict, Unpack

from sqlalchemy import String, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.calls import CALL_LIFECYCLE, CallDirection, CallEvent, CallOutcome, CallState
from handoff.store.errors import NotFound
from handoff.store.models import Call, Transition
from handoff.store.transitions import Clock, transition_in_place, update_row, write_ledger


class CallLegs(TypedDict, total=False):
    """ARI ids of what is in the call bridge besides the caller; None clears one."""

    bridge_id: str | None
    ai_channel_id: str | None
    agent_channel_id: str | None


class CallsRepo:
    def __init__(self, session: AsyncSession, clock: Clock, node: str | None = None) -> None:
        self._session = session
        self._clock = clock
        self._node = node

    async def create(
        self,
        *,
        caller_number: str,
        caller_channel_id: str,
        caller_name: str | None = None,
        assistant_id: int | None = None,
        call_id: str | None = None,
        direction: CallDirection = CallDirection.INBOUND,
    ) -> Call:
        call = Call(
            id=call_id or str(uuid.uuid4()),
            assistant_id=assistant_id,
            direction=direction,
            caller_number=caller_number,
            caller_name=caller_name,
            caller_channel_id=caller_channel_id,
            state=CALL_LIFECYCLE.initial,
            started_at=self._clock(),
            version=1,
            node=self._node,
        )
        self._session.add(call)
        await self._session.flush()
        return call

    async def get(self, call_id: str) -> Call:
        call = await self._session.get(Call, call_id, populate_existing=True)
        if call is None:
            raise NotFound("call", call_id)
        return call

    async def apply(self, call_id: str, event: CallEvent, *, seen: CallState | None = None,
                    **legs: Unpack[CallLegs]) -> Call:
        """Move the call through its lifecycle, updating which legs share its bridge.
        `seen`: the state the call is believed to be in, for an event allowed from
        several (see handoff.store.transitions.transition_in_place)."""
        if event is CallEvent.END:
            raise ValueError("end a call with close(), which records its outcome")
        return await self._apply(call_id, event, dict(legs), seen)

    async def close(
        self, call_id: str, outcome: CallOutcome, *, end_cause: str | None = None,
        recording_path: str | None = None, seen: CallState | None = None,
    ) -> Call:
        """End the call with its outcome (and its recording, when kept); every call ends
        through here exactly once."""
        values: dict[str, object] = {"outcome": outcome, "end_cause": end_cause}
        if recording_path is not None:
            values["recording_path"] = recording_path
        return await self._apply(call_id, CallEvent.END, values, seen)

    async def set_legs(self, call_id: str, **legs: Unpack[CallLegs]) -> Call:
        """Record a changed leg without a lifecycle step (the AI leg re-created after a
        controller restart, for instance)."""
        return await self._update(call_id, dict(legs))

    async def set_assistant(self, call_id: str, assistant_id: int) -> Call:
        """The assistant a caller chose in a number's menu takes the call."""
        return await self._update(call_id, {"assistant_id": assistant_id})

    async def voicemail_begins(self, call_id: str) -> Call:
        """The caller is leaving a message from now on (the call's recording holds it)."""
        return await self._update(call_id, {"voicemail_at": self._clock()})

    async def set_recording(self, call_id: str, recording_path: str) -> Call:
        return await self._update(call_id, {"recording_path": recording_path})

    async def recorded_before(self, cutoff: datetime, limit: int) -> Sequence[Call]:
        """Ended calls whose recording is still on file and which ended before cutoff,
        oldest first (the recordings a retention period lets go)."""
        result = await self._session.scalars(
            select(Call).where(Call.state == CallState.ENDED, Call.ended_at < cutoff,
                               Call.recording_path.is_not(None))
            .order_by(Call.ended_at).limit(limit))
        return result.all()

    async def forget_recording(self, call_id: str) -> Call:
        return await self._update(call_id, {"recording_path": None})

    async def _update(self, call_id: str, values: dict[str, object]) -> Call:
        call = await update_row(self._session, Call, call_id, values)
        if call is None:
            raise NotFound("call", call_id)
        return call

    async def open_calls(self, direction: CallDirection | None = None, *,
                         node: str | None = None) -> Sequence[Call]:
        """Calls not yet ended: after a restart each is matched against the channels and
        bridges Asterisk still reports, and closed if its caller is gone. ``node``: only
        the calls that node's Asterisk holds (another node's channels are not in ours)."""
        query = select(Call).where(Call.state != CallState.ENDED)
        if direction is not None:
            query = query.where(Call.direction == direction)
        if node is not None:
            query = query.where(Call.node == node)
        result = await self._session.scalars(
            query.order_by(Call.started_at), execution_options={"populate_existing": True})
        return result.all()

    async def history(self, call_id: str) -> Sequence[Transition]:
        """Every persisted transition of the call and of its handoffs, oldest first."""
        await write_ledger(self._session)  # this transaction's steps too
        result = await self._session.scalars(
            select(Transition).where(Transition.call_id == call_id).order_by(Transition.id)
        )
        return result.all()

    async def _apply(self, call_id: str, event: CallEvent, values: dict[str, object],
                     seen: CallState | None) -> Call:
        now = self._clock()

        async def read() -> CallState | None:
            return await self._session.scalar(_STATE_OF_CALL, {"id": call_id})

        async def write(source: CallState, target: CallState) -> Call | None:
            changes = {**values, **_timestamps(source, target, now)}
            return await update_row(self._session, Call, call_id,
                                    {"state": target, **changes}, source)

        return await transition_in_place(
            self._session, CALL_LIFECYCLE, event, kind="call", key=call_id, seen=seen,
            read=read, write=write, call_of=lambda _: call_id, handoff_id=None, at=now,
        )


# A step's read of where the call stands when its UPDATE cannot tell (see
# handoff.store.transitions.transition_in_place), built once.
_STATE_OF_CALL = select(Call.state).where(Call.id == bindparam("id", type_=String))


def _timestamps(current: CallState, target: CallState, now: datetime) -> dict[str, object]:
    if target is CallState.ENDED:
        return {"ended_at": now}
    if current is CallState.NEW:
        return {"answered_at": now}
    return {}
