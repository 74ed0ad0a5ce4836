"""The AI leg: an AudioSocket channel to the assistant's engine in the call bridge, and
what happens when it fails, so that a caller is never left in silence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from handoff.calls import CallOutcome, CallState
from handoff.live.call import LiveCall, Party
from handoff.live.errors import OutOfHours
from handoff.live.flow import AiEngine, Flow
from handoff.live.legs import add_when_in_stasis, hang_up, role_id
from pbx.ari import AriError

log = logging.getLogger(__name__)

# The reason of the handoff asked for when the AI engine fails a caller twice.
AI_FAILED_REASON = "ai_failed"
# Said to a caller whom neither the AI nor a person can take (Asterisk's core sounds);
# a callback request is on record for them.
APOLOGY = ("sound:im-sorry", "sound:please-try-call-later")
APOLOGY_MAX_S = 10.0
# Keys kept for an AI leg not yet in the bridge: a caller pressing 0 at once presses a
# few; more is a stuck key or an attack, and is dropped.
MAX_KEPT_KEYS = 16


class AiLegs(Flow):
    async def join(self, live: LiveCall, engine: AiEngine) -> None:
        """A new AI leg in the call bridge (lock held). Raises AriError, leaving no leg
        behind, when the engine cannot be reached or its leg is gone at once."""
        engine.expect_call(live.call_id)
        ai = live.new_leg_id("ai")
        live.ai_joining = ai
        try:
            await self.ari.channels.external_media_audiosocket(
                self.ctl.app, engine.address, live.call_id, channel_id=ai
            )
            await add_when_in_stasis(self.ari, live.bridge, ai)
        except AriError:
            live.ai_joining, live.keys_for_ai = None, []
            await hang_up(self.ari, ai)
            raise
        live.ai = ai
        await self.unhold(live)

    async def on_caller_key(self, event: Mapping[str, Any]) -> None:
        """A key the caller pressed while the AI's leg is on its way into the bridge:
        kept for it (a caller who presses 0 at once is not ignored). Once the leg is in,
        the bridge passes keys to it as they come."""
        live = self.ctl.registry.of_event(event)
        if live is None or live.ai_joining is None or live.party is not Party.AI:
            return  # no AI on its way, or a person has the caller: the key is theirs
        if str(event.get("channel", {}).get("id")) != live.caller:
            return
        if self.ctl.menus.in_menu(live.caller) or len(live.keys_for_ai) >= MAX_KEPT_KEYS:
            return
        live.keys_for_ai.append(str(event.get("digit", "")))

    async def on_entered_bridge(self, event: Mapping[str, Any]) -> None:
        """The AI's new leg is in the call's bridge: the keys pressed before are sent to
        it, in order, as the caller pressed them."""
        live = self.ctl.registry.of_event(event)
        leg = str(event.get("channel", {}).get("id"))
        if live is None or leg != live.ai_joining:
            return
        keys, live.ai_joining, live.keys_for_ai = "".join(live.keys_for_ai), None, []
        if not keys:
            return
        log.info("call=%s: %d key(s) pressed before the AI was in the call, given to it",
                 live.call_id, len(keys))
        try:
            await self.ari.channels.send_dtmf(leg, keys)
        except AriError as exc:
            log.warning("call=%s: keys not given to the AI: %s", live.call_id, exc)

    async def join_or_recover(self, live: LiveCall, engine: AiEngine) -> None:
        """Bring the AI to the caller (lock held); a leg that cannot be set up is the AI
        failing this caller, and :meth:`lost` takes it from there."""
        try:
            await self.join(live, engine)
        except AriError as exc:
            log.warning("call=%s: the AI leg could not be set up: %s", live.call_id, exc)
            self.ctl.spawn(self.lost(live), f"AI lost call={live.call_id}")

    async def lost(self, live: LiveCall) -> None:
        """The caller's AI leg failed (could not be set up, or ended on its own): the
        caller must never be left in silence.

        One new leg is tried at once: an engine busy for a moment or a dropped
        connection usually takes the next one. If that fails too, the caller hears hold
        music and a person is asked for (a handoff of reason ``ai_failed``); a card
        already on offer simply goes on. Nobody to take it ends in the assistant's
        fallback (see Offers.give_up).
        """
        async with live.lock:
            if live.ending or live.caller_leaving or live.ai is not None \
                    or live.agent_answered or live.forward_answered:
                return  # the call ended, or someone else is talking to the caller
            live.ai_failures += 1
            engine = await self.ctl.engines.of(live.assistant)
            if live.ai_failures == 1 and engine is not None:
                try:
                    await self.join(live, engine)
                except AriError as exc:
                    live.ai_failures += 1
                    log.warning("call=%s: the AI leg failed again at once: %s",
                                live.call_id, exc)
                else:
                    async with self.store.transaction() as tx:
                        await tx.calls.set_legs(live.call_id, ai_channel_id=live.ai)
                    log.warning("call=%s: AI leg replaced by %s", live.call_id, live.ai)
                    return
            await self.hold(live)
            async with self.store.transaction() as tx:
                await tx.calls.set_legs(live.call_id, ai_channel_id=None)
                state = (await tx.calls.get(live.call_id)).state
        log.error("call=%s: the AI failed twice; the caller is on hold for a person",
                  live.call_id)
        self.ctl.call_changed(live.call_id)
        if state is CallState.WITH_AI:
            # Out of hours nobody comes: the fallback (or the apology, without one) has
            # the caller instead.
            with contextlib.suppress(OutOfHours):
                await self.ctl.request_handoff(
                    live.call_id, reason=AI_FAILED_REASON, priority="high",
                    summary="The AI stopped working during this call; the caller is on hold.",
                )

    async def leave(self, live: LiveCall) -> None:
        """The AI steps out of the call bridge, hold music too: someone else has the
        caller now (lock held)."""
        ai, live.ai = live.ai, None
        live.ai_joining, live.keys_for_ai = None, []
        if ai:
            await hang_up(self.ari, ai)
        await self.unhold(live)

    async def hold(self, live: LiveCall) -> None:
        """Hold music in the call bridge while neither the AI nor a person has the caller
        (lock held; recorded with the rest of the call)."""
        if live.on_hold:
            return
        try:
            await self.ari.bridges.start_moh(live.bridge)
            live.on_hold = True
        except AriError as exc:
            log.error("call=%s: no hold music for the caller: %s", live.call_id, exc)

    async def unhold(self, live: LiveCall) -> None:
        if not live.on_hold:
            return
        live.on_hold = False
        with contextlib.suppress(AriError):
            await self.ari.bridges.stop_moh(live.bridge)

    async def apologise_and_end(self, live: LiveCall) -> None:
        """Neither the AI nor a person can take this caller: say sorry, then hang up.
        The callback request on record is how the call centre gets back to them."""
        live.outcome = CallOutcome.FAILED  # even if the caller hangs up during the apology
        playback = role_id(live.caller, "apology")
        finished = self.ctl.media.playback_finished(playback)
        try:
            async with live.lock:
                if live.ending:
                    return
                await self.unhold(live)
                await self.ari.bridges.play(live.bridge, APOLOGY, playback_id=playback)
            async with asyncio.timeout(APOLOGY_MAX_S):
                await finished
        except (AriError, TimeoutError) as exc:
            log.warning("call=%s: the apology was not played: %r", live.call_id, exc)
        finally:
            self.ctl.media.forget_playback(playback)
        if not live.ending:
            log.info("call=%s: nobody can take the caller; ending the call", live.call_id)
            await self.ctl.end_call(live.call_id)
