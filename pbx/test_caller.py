"""The demo carrier calls a number on the PBX: a test call anyone can place from the
admin page, to see the whole flow (AI greeting, handoff card, supervisor board).

On the carrier the call runs the echo test of its ``agents`` context: the person at
the dashboard hears the receptionist's prompts come back, which proves media both
ways. It ends by itself after ``max_s`` if nobody ends it.
"""

from __future__ import annotations

import secrets

from pbx.ari import AriClient

TEST_CALLER_ID = "Test Caller <+15550100000>"


class TestCaller:
    __test__ = False  # a product class, not a pytest test class despite its name

    def __init__(self, ari_url: str, auth: tuple[str, str], *, trunk: str = "switchboard",
                 number: str = "2000", max_s: int = 300) -> None:
        self.ari_url, self.auth = ari_url, auth
        self.trunk, self.number, self.max_s = trunk, number, max_s

    async def place(self) -> str:
        # REST only (no event stream): the carrier's dialplan looks after the call.
        async with AriClient(self.ari_url, *self.auth) as ari:
            await ari.channels.originate(
                f"PJSIP/{self.number}@{self.trunk}", extension="*43", context="agents",
                priority=1, caller_id=TEST_CALLER_ID, timeout=30,
                channel_id=f"testcall-{secrets.token_hex(6)}",
                variables={"TIMEOUT(absolute)": str(self.max_s)},
            )
        return self.number
