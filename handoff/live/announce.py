"""What the caller is told when a person joins: at handover (the agent who accepted),
takeover (a supervisor) and transfer (a colleague), per assistant; silence unless the
admin wrote words for that moment.

Played on the caller's own channel, not into the call bridge: the caller hears it while
the person, already in the bridge, hears nothing of it and can start once it ends. It
starts after the person is connected, so it never delays the move itself.
"""

from __future__ import annotations

import contextlib
import logging

from handoff.assistants import Moment
from handoff.live.call import LiveCall
from handoff.live.flow import Flow
from pbx.ari import AriError

log = logging.getLogger(__name__)


class Announcements(Flow):
    def say(self, live: LiveCall, moment: Moment) -> None:
        """Tell the caller, in the background, if the call's assistant says to."""
        self.ctl.spawn(self._say(live, moment), f"announce {moment} call={live.call_id}")

    async def _say(self, live: LiveCall, moment: Moment) -> None:
        words, live.announcements = live.announcements, None
        if words is None:
            async with self.store.transaction() as tx:
                assistant = await tx.assistants.by_name(live.assistant)
            words = (assistant.announcements or {}) if assistant else {}
        text = words.get(moment.value)
        if not text or live.ending:
            return
        media = await self.ctl.media.prompt(f"{moment.value}-{live.assistant}", text)
        if media is None or live.ending:
            return
        with contextlib.suppress(AriError):  # the caller may have gone meanwhile
            await self.ari.channels.play(live.caller, media,
                                         playback_id=live.new_leg_id(f"announce-{moment}"))
        log.info("call=%s: the caller was told of the %s", live.call_id, moment.value)
