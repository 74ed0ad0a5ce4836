"""After a controller restart or a lost event socket: the ledger matched with Asterisk.

Asterisk does not queue events while nobody listens, and channels stay parked in Stasis,
so the truth is in Asterisk: calls whose caller is still there are adopted (the AI
rejoins if its leg went with the old controller), calls whose caller is gone are closed
with an outcome, and legs or bridges that belong to no open call are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handoff.assistants import FallbackKind, accept_timeout_s
from handoff.calls import CallDirection, CallEvent, CallOutcome, CallState
from handoff.events import CARDS_TOPIC, CallEnded, Withdrawn, assistant_topic
from handoff.handoffs import FailureReason, HandoffEvent, HandoffState
from handoff.live.call import LiveCall, legs_of
from handoff.live.flow import Flow
from handoff.live.legs import bridge_of, destroy, hang_up, owner_of, role_of
from handoff.live.offer import CALLBACK_NOTE, OUT_OF_HOURS, callback_note
from handoff.store.models import Call, Handoff
from handoff.store.transitions import utc_now

if TYPE_CHECKING:
    from handoff.live.control import CallControl
    from handoff.store import Transaction

log = logging.getLogger(__name__)


def pbx_started(info: Mapping[str, Any]) -> datetime | None:
    """When the PBX last started, from ARI's /asterisk/info (None if it does not say)."""
    try:
        return datetime.fromisoformat(str(info.get("status", {}).get("startup_time", "")))
    except ValueError:
        return None


class Reconciler(Flow):
    def __init__(self, ctl: CallControl) -> None:
        super().__init__(ctl)
        # Other parts of the controller with legs and bridges in this Stasis app
        # (supervision sessions, call-backs): reconcile first lets them take up their
        # own (adopt), then leaves what they name alone (owned).
        self._other_owners: list[Callable[[], Iterable[str]]] = []
        self._other_adopters: list[Callable[[], Awaitable[None]]] = []

    def leave_alone(
        self, owned: Callable[[], Iterable[str]],
        adopt: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._other_owners.append(owned)
        if adopt is not None:
            self._other_adopters.append(adopt)

    async def reconcile(self) -> None:
        """Match the ledger with what Asterisk reports; run after every (re)connect."""
        for adopt in self._other_adopters:
            await adopt()
        app = await self.ari.applications.get(self.ctl.app)
        live_channels = set(app["channel_ids"])
        live_bridges = set(app["bridge_ids"])
        info = await self.ari.asterisk.info()
        started = pbx_started(info)
        async with self.store.transaction() as tx:
            # Call-backs (outbound) are the Callbacks' to reconcile.
            # In a cluster, only this node's: the others' callers are in their Asterisk.
            open_calls = list(await tx.calls.open_calls(CallDirection.INBOUND,
                                                        node=self.store.node))
            names = {a.id: a.name for a in await tx.assistants.all()}
        kept: set[str] = set()
        for row in open_calls:
            if row.caller_channel_id in live_channels:
                live = await self._adopt(row, names.get(row.assistant_id or -1, ""),
                                         live_channels)
                kept |= legs_of(live)
            else:
                restarted = started is not None and started > row.started_at
                await self._close_lost(row.id, restarted)
        for owned in self._other_owners:
            kept |= set(owned())
        for channel in live_channels - kept:
            log.warning("reconcile: hanging up %s, which belongs to no open call", channel)
            await hang_up(self.ari, channel)
        for bridge in live_bridges - kept:
            log.warning("reconcile: destroying bridge %s, which belongs to no open call", bridge)
            await destroy(self.ari, bridge)
        log.info("reconciled: %d calls adopted, %d closed",
                 len(self.ctl.calls), len(open_calls) - len(self.ctl.calls))

    async def hang_up_taken_over(self) -> None:
        """This node's lease lapsed and a surviving node ended its calls in the ledger
        (pbx_lost, their agents freed): what is left of them here is hung up, so no
        caller stays on a line nobody answers for."""
        async with self.store.transaction() as tx:
            ended = [live for live in list(self.ctl.calls.values())
                     if (await tx.calls.get(live.call_id)).state is CallState.ENDED]
        for live in ended:
            async with live.lock:
                if live.closed:
                    continue
                live.close()  # the ledger has its outcome: the hang-up records nothing
                await self.ctl.offers.unstage(live)
                for leg in (live.agent, live.ai, live.forward, live.caller):
                    if leg:
                        await hang_up(self.ari, leg)
                await destroy(self.ari, live.bridge)
            self.ctl.registry.remove(live)
            log.warning("call=%s was ended by another node while this node's lease had "
                        "lapsed: hung up", live.call_id)

    async def _adopt(self, row: Call, assistant: str, live_channels: set[str]) -> LiveCall:
        live = self.ctl.calls.get(row.id)
        if live is None:
            live = LiveCall(row.id, assistant, row.caller_channel_id,
                            row.bridge_id or bridge_of(row.caller_channel_id),
                            row.caller_number, recording=f"call-{row.id}")
            self.ctl.registry.add(live)
        async with live.lock:
            live.ai = row.ai_channel_id if row.ai_channel_id in live_channels else None
            live.agent = row.agent_channel_id if row.agent_channel_id in live_channels else None
            # The fallback number's leg is in no column: its id names the call and role.
            live.forward = next((c for c in live_channels if owner_of(c) == live.caller
                                 and role_of(c) == "forward"), None)
            forward_up = live.forward is not None and (
                row.state is CallState.FORWARDED
                or (await self.ari.channels.get(live.forward))["state"] == "Up")
            async with self.store.transaction() as tx:
                handoffs = list(await tx.handoffs.open_for_call(row.id))
                cancelled = await self._cancel_interrupted_transfer(tx, handoffs)
                handoffs = [h for h in handoffs if h.id not in cancelled]
                current = handoffs[-1] if handoffs else None
                if current is not None and current.accepted_by is not None:
                    live.agent_id = current.accepted_by
                notes = await tx.notes.for_call(row.id)
            live.callback_requested = any(n.text.startswith(CALLBACK_NOTE) for n in notes)
            # Its out-of-hours fallback applied before the restart: not a second time.
            live.out_of_hours = any(n.text == callback_note(OUT_OF_HOURS) for n in notes)
            if row.voicemail_at is not None:
                self.ctl.voicemail.resume(live, row.voicemail_at)
            elif (live.callback_requested and current is None and live.agent is None
                  and await self._falls_back_to_voicemail(assistant)):
                # The fallback had sent the caller to voicemail (its call-back is noted)
                # but the beep had not sounded: the prompt again, not the AI back over a
                # message the caller is about to leave.
                await self.ctl.voicemail.take(live)
            if current is not None:
                live.handoff_id = current.id
                await self._resume_handoff(live, current)
            # The AI's leg went with the old controller. The caller is alone unless a
            # person has picked up: an agent's phone that still rings leaves them in
            # silence for up to the ring window, so the AI comes back for that too (and
            # steps out as usual once the agent answers).
            needs_ai = live.ai is None and (live.agent is None or not live.agent_answered) \
                and not live.voicemail and not forward_up
            engine = await self.ctl.engines.of(assistant)
        for handoff_id in cancelled:
            self.hub.publish(CARDS_TOPIC, Withdrawn(handoff_id, FailureReason.CANCELLED))
        lost: int | None = None
        if needs_ai and engine is not None:
            # The AI engine went down with the old controller; the caller gets it back.
            async with live.lock:
                await self.ctl.ai.join_or_recover(live, engine)
                async with self.store.transaction() as tx:
                    if row.state is CallState.WITH_AGENT:
                        # ...and the agent's leg went too: as when it vanishes mid-call,
                        # the attempt failed and the call is offered again.
                        await tx.calls.apply(live.call_id, CallEvent.AGENT_LOST,
                                             ai_channel_id=live.ai, agent_channel_id=None)
                        if current is not None and current.state is HandoffState.CONNECTED:
                            await tx.handoffs.apply(current.id, HandoffEvent.FAIL,
                                                    failure_reason=FailureReason.AGENT_VANISHED)
                            lost = current.id
                            live.agent_lost()
                            live.agent_id = None
                    else:
                        await tx.calls.set_legs(live.call_id, ai_channel_id=live.ai)
        if lost is not None:
            self.ctl.spawn(self.ctl.offers.reoffer(live, lost), f"reoffer call={live.call_id}")
        if forward_up:
            # The caller talks to the fallback number (or it answered while nobody
            # listened): that conversation goes on; a leg still ringing is left to ring,
            # and its answer or hang-up comes as an event like any other.
            if row.state is CallState.FORWARDED:
                live.forward_picked_up()
            else:
                await self.ctl.offers.forward_answered(live)
        log.info("call=%s adopted (caller %s, ai %s, agent %s)",
                 live.call_id, live.caller, live.ai, live.agent)
        return live

    async def _falls_back_to_voicemail(self, assistant: str) -> bool:
        async with self.store.transaction() as tx:
            found = await tx.assistants.by_name(assistant)
        return found is not None and found.fallback_kind is FallbackKind.VOICEMAIL

    @staticmethod
    async def _cancel_interrupted_transfer(tx: Any, handoffs: list[Handoff]) -> list[int]:
        """A transfer under way when the previous controller stopped is cancelled: the
        agent who has the caller keeps them (the colleague's card goes; a leg of theirs
        already ringing is removed as a leftover). Returns the cancelled handoffs' ids."""
        connected = [h for h in handoffs if h.state is HandoffState.CONNECTED]
        if not connected:
            return []
        cancelled = [h.id for h in handoffs if h.id > connected[-1].id]
        for handoff_id in cancelled:
            await tx.handoffs.apply(handoff_id, HandoffEvent.FAIL,
                                    failure_reason=FailureReason.CANCELLED)
        return cancelled

    async def _resume_handoff(self, live: LiveCall, handoff: Handoff) -> None:
        """Pick up a handoff where the previous controller left it (lock held)."""
        state = handoff.state
        if state is HandoffState.CONNECTED:
            live.resumed_with_agent()
        elif state in (HandoffState.ACCEPTED, HandoffState.CONNECTING):
            if live.agent is None:
                # The agent leg was never dialled or is gone: offer the call again.
                assert live.handoff_id is not None
                async with self.store.transaction() as tx:
                    await tx.handoffs.apply(live.handoff_id, HandoffEvent.FAIL,
                                            failure_reason=FailureReason.AGENT_LEG_FAILED)
                self.ctl.spawn(self.ctl.offers.reoffer(live, live.handoff_id),
                               "reoffer after restart")
            elif (await self.ari.channels.get(live.agent))["state"] == "Up":
                # The agent answered while nobody listened: finish the move now.
                live.resumed_answered()
                await self.ctl.moves.agent_connected(live)
            # else: it still rings; its ChannelStateChange or hang-up will come.
        elif state is HandoffState.OFFERED:
            assert live.handoff_id is not None
            # The offer's clock goes on: the caller has been waiting since it was made.
            async with self.store.transaction() as tx:
                timeout = accept_timeout_s(await tx.assistants.by_name(live.assistant))
                queue = (await tx.queues.get(handoff.queue_id)
                         if handoff.queue_id is not None else None)
            waited = (utc_now() - (handoff.offered_at or handoff.requested_at)).total_seconds()
            self.ctl.offers.keep_offering(live, handoff, queue, timeout, waited)

    async def _close_lost(self, call_id: str, pbx_restarted: bool) -> None:
        """The caller left while we were not listening: record how the call ended."""
        async with self.store.transaction() as tx:
            call = await tx.calls.get(call_id)
            outcome = (
                CallOutcome.PBX_RESTART if pbx_restarted
                else CallOutcome.COMPLETED_BY_AGENT if call.state is CallState.WITH_AGENT
                else CallOutcome.COMPLETED_BY_AI
            )
            await close_unheard(
                tx, call_id, outcome,
                "pbx_restart" if pbx_restarted else "ended while the controller was away",
                FailureReason.PBX_RESTART if pbx_restarted else None)
        live = self.ctl.calls.get(call_id)
        if live is not None:
            self.ctl.registry.remove(live)
            self.hub.publish(assistant_topic(live.assistant), CallEnded(call_id))
        self.hub.publish(CARDS_TOPIC, CallEnded(call_id))
        log.info("call=%s closed on reconcile (%s)", call_id,
                 "Asterisk restarted" if pbx_restarted else "caller gone")


async def close_unheard(tx: Transaction, call_id: str, outcome: CallOutcome, end_cause: str,
                        failure: FailureReason | None) -> None:
    """A call that ended where no controller heard it end gets its outcome: its open
    handoffs fail with ``failure`` (the PBX took the call down), or, without one, the
    caller is taken to have hung up. The agents they held are free again."""
    for handoff in await tx.handoffs.open_for_call(call_id):
        if failure is not None:
            await tx.handoffs.apply(handoff.id, HandoffEvent.FAIL, failure_reason=failure,
                                    seen=handoff.state)
        else:
            await tx.handoffs.apply(handoff.id, HandoffEvent.CALLER_HUNG_UP,
                                    seen=handoff.state)
    await tx.calls.close(call_id, outcome, end_cause=end_cause)
