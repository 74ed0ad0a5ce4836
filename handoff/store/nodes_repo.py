"""Nodes' leases: how the controllers of a cluster know which of them are alive.

Each controller renews its node's row every few seconds. A row whose lease has expired
belongs to a node that is gone (its host, its Asterisk and its controller, or only its
controller cut off from the database): one surviving controller claims it with a
conditional UPDATE, so that exactly one of them ends that node's calls, however many
look at once. Times are on each controller's clock: the nodes keep time (NTP), and a
lease of seconds dwarfs their skew.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.store.models import Node
from handoff.store.transitions import Clock


class NodesRepo:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    async def renew(self, name: str, lease: timedelta) -> str | None:
        """Hold ``name``'s lease for ``lease`` from now. Returns the survivor that took
        the node's calls over since the last renewal (the lease had expired), or None:
        the node still holds every call it had."""
        now = self._clock()
        # Locked: a survivor's claim waits for this renewal, then finds the lease current.
        node = await self._session.scalar(
            select(Node).where(Node.name == name).with_for_update(),
            execution_options={"populate_existing": True})
        if node is None:
            self._session.add(Node(name=name, renewed_at=now, expires_at=now + lease))
            await self._session.flush()
            return None
        taken_by = node.lost_to if node.lost_at is not None else None
        await self._session.execute(
            update(Node).where(Node.name == name)
            .values(renewed_at=now, expires_at=now + lease, lost_at=None, lost_to=None))
        return taken_by

    async def claim_lost(self, by: str, *, wait: timedelta | None = None) -> list[str]:
        """The nodes whose lease has expired and whose calls nobody has taken over yet,
        now ``by``'s to end. One conditional UPDATE: two survivors claiming at once get
        each node once between them.

        ``wait``: how long this transaction waits for a row another one locked (on
        PostgreSQL; then it fails with :func:`~handoff.store.errors.lock_not_available`).
        A node whose host died mid-transaction holds its locks until the server drops
        its connection; a survivor waiting that long would miss its own renewals."""
        if wait is not None and self._session.get_bind().dialect.name == "postgresql":
            await self._session.execute(
                text(f"SET LOCAL lock_timeout = {int(wait.total_seconds() * 1000)}"))
        now = self._clock()
        result = await self._session.scalars(
            update(Node)
            .where(Node.expires_at < now, Node.lost_at.is_(None), Node.name != by)
            .values(lost_at=now, lost_to=by)
            .returning(Node.name))
        return sorted(result.all())

    async def all(self) -> Sequence[Node]:
        result = await self._session.scalars(
            select(Node).order_by(Node.name), execution_options={"populate_existing": True})
        return result.all()
