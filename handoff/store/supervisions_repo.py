"""Supervisors' sessions on live calls, as the node holding each call keeps them
(handoff.supervision): what every node's board and panel show of them. The legs and
bridges of a session are that node's alone; only who supervises which call, how and
where is shared."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.calls import CallState
from handoff.store.models import Call, SupervisionRecord
from handoff.store.transitions import Clock


class SupervisionsRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def hold(self, call_id: str, supervisor_id: int, mode: str,
                   node: str | None) -> None:
        """``supervisor_id`` supervises ``call_id`` in ``mode`` through ``node``:
        recorded, or the record's mode changed."""
        row = await self._session.get(SupervisionRecord, (call_id, supervisor_id),
                                      populate_existing=True)
        if row is None:
            self._session.add(SupervisionRecord(
                call_id=call_id, supervisor_id=supervisor_id, mode=mode, node=node,
                started_at=self._clock()))
        else:
            row.mode, row.node = mode, node
        await self._session.flush()

    async def let_go(self, call_id: str, supervisor_id: int) -> None:
        await self._session.execute(delete(SupervisionRecord).where(
            SupervisionRecord.call_id == call_id,
            SupervisionRecord.supervisor_id == supervisor_id))

    async def of_supervisor(self, supervisor_id: int) -> Sequence[SupervisionRecord]:
        """Their sessions on calls still open, the latest first."""
        result = await self._session.scalars(
            select(SupervisionRecord).join(Call, Call.id == SupervisionRecord.call_id)
            .where(SupervisionRecord.supervisor_id == supervisor_id,
                   Call.state != CallState.ENDED)
            .order_by(SupervisionRecord.started_at.desc()))
        return result.all()

    async def drop_node(self, node: str | None, *,
                        keep: Collection[tuple[str, int]] = ()) -> int:
        """Forget ``node``'s sessions but those in ``keep`` ((call, supervisor) pairs):
        a restarted node's sessions ended with its process, a lost node's with its
        Asterisk. Returns how many went."""
        gone = delete(SupervisionRecord).where(
            SupervisionRecord.node.is_(None) if node is None
            else SupervisionRecord.node == node)
        if keep:
            gone = gone.where(tuple_(SupervisionRecord.call_id,
                                     SupervisionRecord.supervisor_id).not_in(list(keep)))
        result = await self._session.execute(gone)
        return int(getattr(result, "rowcount", 0) or 0)
