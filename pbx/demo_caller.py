"""The demo carrier's test caller: it calls a number on the PBX when the admin places a
test call, to show the whole flow (AI greeting, handoff card, a person taking over).

On the carrier the call runs the ``test-caller`` dialplan (asterisk-config/
extensions.conf.j2): it listens to the AI's greeting, presses 0 as a caller asking for a
person would, then speaks its own words (spoken once by espeak-ng) until someone ends
the call. The agent who takes the card therefore hears a caller, not their own echo.
The call ends by itself after ``max_s`` if nobody ends it.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from pbx.ari import AriClient
from pbx.runtime import AsteriskInstance

DEMO_CALLER_ID = "Test Caller <+15550100000>"
# What the agent hears once they have the call (spoken by espeak-ng at set-up).
DEMO_CALLER_WORDS = (
    "Hello, this is the Switchboard test caller. I pressed zero to speak with a person, "
    "and you took my call, so the handoff works. You can end the call from your desk."
)
# The dialplan's Playback path under the carrier's var/lib, without the .sln extension.
SOUND = "sounds/test-caller"


def install_voice(carrier: AsteriskInstance, spoken: Path) -> None:
    """Put the test caller's words (raw slin 8 kHz) where the carrier's dialplan plays
    them: inside the carrier's own tree, which the embedded Asterisk can see."""
    target = carrier.host_path(f"{carrier.spec.dirs.varlib}/{SOUND}.sln")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spoken, target)


class DemoCaller:
    """Places the test caller's call from the demo carrier (its ARI) to ``number``."""

    def __init__(self, ari_url: str, auth: tuple[str, str], *, trunk: str = "switchboard",
                 number: str = "2000", max_s: int = 300) -> None:
        self.ari_url, self.auth = ari_url, auth
        self.trunk, self.number, self.max_s = trunk, number, max_s

    async def place(self) -> str:
        # REST only (no event stream): the carrier's dialplan plays the caller's part.
        async with AriClient(self.ari_url, *self.auth) as ari:
            await ari.channels.originate(
                f"PJSIP/{self.number}@{self.trunk}", extension="s", context="test-caller",
                priority=1, caller_id=DEMO_CALLER_ID, timeout=30,
                channel_id=f"testcall-{secrets.token_hex(6)}",
                variables={"TIMEOUT(absolute)": str(self.max_s)},
            )
        return self.number
