"""The store's entry point: one database transaction per unit of controller work.

Several writes that describe one telephony step (the agent leg joined the bridge: the
handoff is connected AND the call is with the agent) commit together or not at all, so
a controller crash between them cannot leave the ledger saying two different things.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from handoff.store.agents_repo import AgentsRepo
from handoff.store.assistants_repo import AssistantsRepo
from handoff.store.audit_repo import AuditRepo
from handoff.store.blocks_repo import BlocksRepo
from handoff.store.calls_repo import CallsRepo
from handoff.store.contacts_repo import ContactsRepo
from handoff.store.handoffs_repo import HandoffsRepo
from handoff.store.history_repo import HistoryRepo
from handoff.store.kpis_repo import KpisRepo
from handoff.store.nodes_repo import NodesRepo
from handoff.store.notes_repo import NotesRepo
from handoff.store.quality_repo import QualityRepo
from handoff.store.queues_repo import QueuesRepo
from handoff.store.reasons_repo import DispositionsRepo, PauseReasonsRepo
from handoff.store.sessions_repo import SessionsRepo
from handoff.store.supervisions_repo import SupervisionsRepo
from handoff.store.transcripts_repo import TranscriptsRepo
from handoff.store.transitions import Clock, utc_now, write_ledger
from handoff.store.trunks_repo import TrunksRepo


@dataclass(frozen=True, slots=True)
class Transaction:
    calls: CallsRepo
    handoffs: HandoffsRepo
    agents: AgentsRepo
    assistants: AssistantsRepo
    contacts: ContactsRepo
    transcripts: TranscriptsRepo
    notes: NotesRepo
    audit: AuditRepo
    sessions: SessionsRepo
    history: HistoryRepo
    blocks: BlocksRepo
    trunks: TrunksRepo
    queues: QueuesRepo
    pause_reasons: PauseReasonsRepo
    dispositions: DispositionsRepo
    kpis: KpisRepo
    quality: QualityRepo
    nodes: NodesRepo
    supervisions: SupervisionsRepo


class Store:
    """Built once by the composition root from its engine (and a clock, fake in tests).

    Rows returned by the repositories are snapshots: they stay readable after the
    transaction ends, but changing them changes nothing; write through a repository.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock = utc_now, *,
                 node: str | None = None) -> None:
        self.engine = engine
        self._clock = clock
        # The cluster node this process controls (cluster.node): the calls it opens are
        # stamped with it, and after a restart it reconciles only those (None: one box).
        self.node = node
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    def now(self) -> datetime:
        """The time on the ledger's clock, for a moment noted outside a transaction."""
        return self._clock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Commit when the block ends normally, roll back when it raises."""
        async with self._sessions() as session, session.begin():
            yield self._repos(session)
            # The steps' ledger lines, together (handoff.store.transitions.write_ledger).
            await write_ledger(session)

    def _repos(self, session: AsyncSession) -> Transaction:
        clock = self._clock
        audit = AuditRepo(session, clock)
        return Transaction(
            calls=CallsRepo(session, clock, self.node),
            handoffs=HandoffsRepo(session, clock),
            agents=AgentsRepo(session, audit, clock),
            assistants=AssistantsRepo(session),
            contacts=ContactsRepo(session),
            transcripts=TranscriptsRepo(session, clock),
            notes=NotesRepo(session, clock),
            audit=audit,
            sessions=SessionsRepo(session, clock),
            history=HistoryRepo(session, clock),
            blocks=BlocksRepo(session, clock),
            trunks=TrunksRepo(session, clock),
            queues=QueuesRepo(session, clock),
            pause_reasons=PauseReasonsRepo(session, clock),
            dispositions=DispositionsRepo(session, clock),
            kpis=KpisRepo(session, clock),
            quality=QualityRepo(session, clock),
            nodes=NodesRepo(session, clock),
            supervisions=SupervisionsRepo(session, clock),
        )
