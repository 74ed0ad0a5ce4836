"""Blocked SIP addresses: who the PBX refuses for a while, and who lifted a block."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.models import SipBlock
from handoff.store.transitions import Clock


class BlocksRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def active(self) -> Sequence[SipBlock]:
        """Blocks in force now, by address."""
        result = await self._session.scalars(
            select(SipBlock).where(SipBlock.lifted_at.is_(None), SipBlock.until > self._clock())
            .order_by(SipBlock.address, SipBlock.id),
            execution_options={"populate_existing": True})
        return result.all()

    async def block(self, address: str, seconds: float, failures: int) -> SipBlock:
        now = self._clock()
        block = SipBlock(address=address, blocked_at=now, until=now + timedelta(seconds=seconds),
                         failures=failures)
        self._session.add(block)
        await self._session.flush()
        return block

    async def lift(self, address: str, actor: str) -> int:
        """End the address's blocks in force now; how many there were."""
        result = await self._session.execute(
            update(SipBlock)
            .where(SipBlock.address == address, SipBlock.lifted_at.is_(None),
                   SipBlock.until > self._clock())
            .values(lifted_at=self._clock(), lifted_by=actor))
        return int(getattr(result, "rowcount", 0) or 0)
