"""Waiting on what a leg sounds like: its first RTP packet, its first words, the end of a
playback. Each wait is bounded (see Timing): a phone that suppresses silence, or an AI
that says nothing, must not hold a call up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handoff.live.flow import Flow
from handoff.prompts import PromptError, speak
from pbx.ari import AriError

if TYPE_CHECKING:
    from handoff.live.control import CallControl

log = logging.getLogger(__name__)


class Media(Flow):
    def __init__(self, ctl: CallControl) -> None:
        super().__init__(ctl)
        # Legs whose first words someone waits for (TALK_DETECT), by channel id.
        self._talking: dict[str, asyncio.Future[None]] = {}
        # Playbacks someone waits to finish, by playback id.
        self._playing: dict[str, asyncio.Future[None]] = {}

    async def prompt(self, name: str, text: str) -> str | None:
        """``text`` spoken by espeak-ng (once: the file is kept) into the Asterisk's own
        sounds, as a media URI; None when this host cannot write them (an Asterisk it
        does not run) or espeak-ng fails, which the log says."""
        sounds = self.ctl.sounds
        if sounds is None:
            return None
        try:
            made = await asyncio.to_thread(speak, sounds.host, {name: text})
        except (PromptError, OSError, subprocess.CalledProcessError) as exc:
            log.error("prompt %s could not be spoken: %s", name, exc)
            return None
        return sounds.media(made[name].stem)

    async def until_media_from(self, leg: str, *, within: float | None = None,
                               step: float | None = None) -> datetime | None:
        """Return once Asterisk has received RTP from `leg` (bounded: `within`, by default
        the agent's wait in Timing; read every `step`): when it first had some (on the
        ledger's clock), or None if none came or the leg went."""
        within = self.timing.agent_media_wait_s if within is None else within
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                stats = await self.ari.channels.rtp_statistics(leg)
            except AriError:
                return None  # the leg went (its hang-up is handled) or has no RTP instance
            if int(stats.get("rxcount") or 0) > 0:
                return self.store.now()
            await asyncio.sleep(self.timing.agent_media_poll_s if step is None else step)
        log.info("leg %s sent no audio within %.1f s of answering", leg, within)
        return None

    async def until_heard(self, leg: str | None) -> datetime | None:
        """Until a party who just answered is heard (its first packet), plus the short
        overlap with the AI: a moment of both is not noticed, a hole in the audio is.
        Returns when the first packet reached Asterisk (None: none came)."""
        heard = await self.until_media_from(leg) if leg is not None else None
        await asyncio.sleep(self.timing.ai_overlap_s)
        return heard

    async def on_talking(self, event: Mapping[str, Any]) -> None:
        waiter = self._talking.pop(str(event["channel"]["id"]), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def until_voice_from(self, leg: str) -> None:
        """Return once Asterisk hears `leg` speak (TALK_DETECT; bounded, see Timing).

        For an AI leg, whose AudioSocket stream is not RTP: a rejoining AI needs a
        moment before its first words, and the agent must not leave before them.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._talking[leg] = waiter
        try:
            await self.ari.channels.set_variable(leg, "TALK_DETECT(set)", "")
            async with asyncio.timeout(self.timing.agent_media_wait_s):
                await waiter
        except TimeoutError:
            log.info("leg %s did not speak within %.1f s; going on",
                     leg, self.timing.agent_media_wait_s)
        except AriError:
            pass  # the leg went: whoever waits finds out
        finally:
            self._talking.pop(leg, None)
        with contextlib.suppress(AriError):
            await self.ari.channels.set_variable(leg, "TALK_DETECT(remove)", "")

    async def on_playback_finished(self, event: Mapping[str, Any]) -> None:
        waiter = self._playing.pop(str(event["playback"]["id"]), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def playback_finished(self, playback_id: str) -> asyncio.Future[None]:
        """A future that completes when the playback `playback_id` (to be started by the
        caller) finishes; :meth:`forget_playback` once it is no longer waited for."""
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._playing[playback_id] = finished
        return finished

    def forget_playback(self, playback_id: str) -> None:
        self._playing.pop(playback_id, None)
