"""The voicemail fallback: a caller nobody can take leaves a message, which the call
centre gets as a call-back request with the message to play.

The caller stays in the call bridge, which is recorded from the answer on, so the
message needs no second recording: the AI steps out, a prompt and a beep play into the
bridge, and from the beep on (``calls.voicemail_at``) the call's recording is the
message. The caller hangs up when done; a message is bounded (``voicemail_max_s``), after
which the call is ended for them. Either way the call is a call-back request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from handoff.calls import CallOutcome
from handoff.live.call import LiveCall
from handoff.live.flow import Flow
from handoff.live.legs import role_id
from handoff.store import NotFound
from handoff.store.transitions import utc_now
from pbx.ari import AriError

log = logging.getLogger(__name__)

VOICEMAIL_PROMPT = ("Nobody can take your call right now. Please leave a message after "
                    "the tone, with your name and number, and we will call you back.")
BEEP = "sound:beep"
# The prompt is a few seconds; a playback Asterisk never reports finished must not keep
# the message from starting.
PROMPT_MAX_S = 20.0


class Voicemail(Flow):
    async def take(self, live: LiveCall) -> None:
        """The caller leaves a message (lock held; the call-back is noted already)."""
        if live.voicemail or live.ending:
            return
        live.voicemail = True
        live.callback_requested = True
        await self.ctl.ai.leave(live)
        async with self.store.transaction() as tx:
            await tx.calls.set_legs(live.call_id, ai_channel_id=None)
        playback = role_id(live.caller, "voicemail")
        finished = self.ctl.media.playback_finished(playback)
        media = await self.ctl.media.prompt("voicemail", VOICEMAIL_PROMPT)
        try:
            await self.ari.bridges.play(live.bridge, [m for m in (media, BEEP) if m],
                                        playback_id=playback)
        except AriError as exc:
            # No prompt: the message is recorded all the same, from now on.
            log.warning("call=%s: voicemail prompt not played: %s", live.call_id, exc)
            self.ctl.media.forget_playback(playback)
            finished.set_result(None)
        log.info("call=%s: the caller leaves a voicemail", live.call_id)
        self.ctl.spawn(self._message(live, playback, finished),
                       f"voicemail call={live.call_id}")

    async def _message(self, live: LiveCall, playback: str,
                       finished: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(PROMPT_MAX_S):
                await finished
        except TimeoutError:
            log.warning("call=%s: the voicemail prompt never finished", live.call_id)
        finally:
            self.ctl.media.forget_playback(playback)
        if live.caller_leaving or live.ending:
            return  # the caller hung up during the prompt: no message, a call-back
        async with self.store.transaction() as tx:
            await tx.calls.voicemail_begins(live.call_id)
        self.ctl.call_changed(live.call_id)
        await self._bounded(live, self.timing.voicemail_max_s)

    def resume(self, live: LiveCall, began: datetime) -> None:
        """A restarted controller adopts a caller in the middle of their message: no AI
        comes back over it, and what is left of its bound still ends it."""
        live.voicemail = live.callback_requested = True
        left = self.timing.voicemail_max_s - (utc_now() - began).total_seconds()
        self.ctl.spawn(self._bounded(live, max(0.0, left)), f"voicemail call={live.call_id}")

    async def _bounded(self, live: LiveCall, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not (live.caller_leaving or live.ending):
            log.info("call=%s: the voicemail reached its %.0f s; ending the call",
                     live.call_id, self.timing.voicemail_max_s)
            with contextlib.suppress(NotFound):
                await self.ctl.end_call(live.call_id, CallOutcome.CALLBACK_REQUESTED)
