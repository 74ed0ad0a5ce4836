"""A number's DTMF menu, played by the controller before any AI joins the call.

The caller is already in the call bridge (answered, recorded) when the prompt plays
into that bridge; their key arrives as ARI's ChannelDtmfReceived on their own channel.
A key pressed while the prompt plays stops it: callers who know the menu need not
listen to it. The prompt is spoken by espeak-ng, once per text (the file name carries
its digest), into a folder Asterisk reads its sounds from; an Asterisk whose folders
this host cannot write (one someone else runs) hears a beep instead, and the keys
work the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from handoff.calls import CallOutcome
from handoff.live.call import LiveCall
from handoff.live.flow import Flow
from handoff.live.legs import role_id
from handoff.menus import Choice, Menu
from pbx.ari import AriError

if TYPE_CHECKING:
    from handoff.live.control import CallControl

log = logging.getLogger(__name__)

# The prompt is said this many times before the menu's own assistant answers.
ROUNDS = 2
NO_PROMPT = "sound:beep"


class Menus(Flow):
    def __init__(self, ctl: CallControl) -> None:
        super().__init__(ctl)
        # The keys of callers in a menu, by their channel id.
        self._keys: dict[str, asyncio.Queue[str]] = {}

    def in_menu(self, caller: str) -> bool:
        """Whether the caller on channel ``caller`` is hearing a menu now."""
        return caller in self._keys

    async def on_dtmf(self, event: Mapping[str, Any]) -> None:
        keys = self._keys.get(str(event.get("channel", {}).get("id", "")))
        if keys is not None and not keys.full():
            keys.put_nowait(str(event.get("digit", "")))

    async def choose(self, live: LiveCall, menu: Menu) -> Choice | None:
        """Play the menu and read a key that leads somewhere; None when the caller gave
        none in time (or hung up): the menu's own assistant answers."""
        keys: asyncio.Queue[str] = asyncio.Queue(maxsize=32)
        self._keys[live.caller] = keys
        # A caller who hangs up in the menu never reached anyone.
        live.outcome = CallOutcome.ABANDONED
        try:
            media = await self.ctl.media.prompt(f"menu-{live.assistant}",
                                                menu.prompt) or NO_PROMPT
            for round_ in range(ROUNDS):
                if live.ending:
                    return None
                playback = role_id(live.caller, f"menu-{round_}")
                try:
                    await self.ari.bridges.play(live.bridge, media, playback_id=playback)
                except AriError as exc:
                    log.warning("call=%s: menu prompt not played: %s", live.call_id, exc)
                    return None
                choice = await self._key(live, menu, keys, playback)
                if choice is not None:
                    log.info("call=%s: caller chose %s in the menu", live.call_id, choice)
                    return choice
            log.info("call=%s: no key in the menu; its own assistant answers", live.call_id)
            return None
        finally:
            self._keys.pop(live.caller, None)
            if live.outcome is CallOutcome.ABANDONED and not live.ending:
                live.outcome = None

    async def _key(self, live: LiveCall, menu: Menu, keys: asyncio.Queue[str],
                   playback: str) -> Choice | None:
        """The first key that leads somewhere within the prompt and the wait after it."""
        try:
            async with asyncio.timeout(self.timing.menu_wait_s):
                while not live.ending:
                    key = await keys.get()
                    with contextlib.suppress(AriError):
                        await self.ari.playbacks.stop(playback)
                    choice = menu.choice(key)
                    if choice is not None:
                        return choice
                    log.info("call=%s: key %s leads nowhere in the menu", live.call_id, key)
        except TimeoutError:
            pass
        with contextlib.suppress(AriError):
            await self.ari.playbacks.stop(playback)
        return None
