"""The classic way, measured in the same run: AMI Redirect of the caller into app_queue.

The caller first sits in a bridge with the same tone AI, in a Stasis app of its own
("baseline"), so that everything before the handoff is identical. Then the caller is
redirected into ``Queue(bench)``, which rings Ada's desk phone. What the classic way
cannot do is visible in how it works: the caller leaves the AI the moment the queue
starts ringing, and nothing can hand the call back to the AI afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handoff.live import add_when_in_stasis
from pbx.ami import AmiClient
from pbx.ari import AriClient, AriError
from pbx.runtime import AsteriskInstance


@dataclass
class BaselineCall:
    channel: str
    name: str
    bridge: str
    ai: str


@dataclass
class Baseline:
    pbx: AsteriskInstance
    engine_address: str  # the tone AI, which takes any stream
    ari: AriClient = field(init=False)
    ami: AmiClient = field(init=False)
    calls: dict[str, BaselineCall] = field(default_factory=dict)  # by caller number

    async def start(self) -> None:
        self.ari = AriClient(self.pbx.ari_url, *self.pbx.ari_auth, apps="baseline")
        self.ari.on("StasisStart", self._on_start)
        self.ari.on("StasisEnd", self._on_end)
        spec = self.pbx.spec
        self.ami = AmiClient("127.0.0.1", spec.ports.ami, spec.ami_user, spec.ami_secret)
        await self.ari.start()
        await self.ami.start()
        await self.ari.wait_ready(10)
        await self.ami.wait_ready(10)

    async def close(self) -> None:
        await self.ari.close()
        await self.ami.close()

    async def _on_start(self, event: Mapping[str, Any]) -> None:
        if (event.get("args") or [])[:1] != ["inbound"]:
            return
        channel = event["channel"]
        stream = uuid.uuid4()
        await self.ari.channels.answer(channel["id"])
        bridge = await self.ari.bridges.create(type="mixing")
        ai = await self.ari.channels.external_media_audiosocket(
            "baseline", self.engine_address, str(stream)
        )
        await add_when_in_stasis(self.ari, bridge["id"], [channel["id"], ai["id"]])
        number = str(channel["caller"]["number"])
        self.calls[number] = BaselineCall(channel["id"], channel["name"], bridge["id"], ai["id"])

    async def _on_end(self, event: Mapping[str, Any]) -> None:
        # The caller left Stasis for the queue: the AI leg and the bridge are done.
        for number, call in list(self.calls.items()):
            if call.channel == event["channel"]["id"]:
                with contextlib.suppress(AriError):
                    await self.ari.channels.hangup(call.ai)
                with contextlib.suppress(AriError):
                    await self.ari.bridges.destroy(call.bridge)
                del self.calls[number]

    async def wait_call(self, number: str, timeout: float = 10) -> BaselineCall:
        async with asyncio.timeout(timeout):
            while number not in self.calls:
                await asyncio.sleep(0.01)
        return self.calls[number]

    async def redirect_to_queue(self, call: BaselineCall) -> None:
        await self.ami.send_action(
            {"Action": "Redirect", "Channel": call.name, "Context": "queues",
             "Exten": "bench", "Priority": "1"}
        )
