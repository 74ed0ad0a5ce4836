"""How the channels and bridges of a call are named, in one place.

Every leg and bridge the controller creates for a call gets an id that starts with the
id of the channel that owns the call (the caller's, or a call-back's key), then ``~``,
then its role: ``<caller>~bridge``, ``<caller>~ai~1a2b``, ``<caller>~agent~2c3d``. The
ARI client orders events by that owner (:func:`call_key`), so all events of one call are
handled one after the other while different calls run concurrently; and a leg found on
Asterisk after a restart says which call it belongs to.

The arguments a leg enters Stasis with say which service owns it
(:class:`handoff.live.routing.StasisRouter`): ``inbound`` for a caller, ``agent``,
``forward``, ``supervisor``, ``snoop``, ``callback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from handoff.ari_api import AriApi
from pbx.ari import AriNotFound, AriUnprocessable
from pbx.ari.resources import HangupReason

SEP = "~"


@dataclass(frozen=True)
class Phones:
    """How this PBX rings agents' phones (the endpoint of a channel to one).

    On a cluster's node a desk phone registers to the SIP edge (``edge``, "host:port";
    ``at_edge`` says whose phone does), and is called at its address of record there,
    not through its AoR's contact: Asterisk dials an AoR's contact only while its latest
    qualify was answered in time, and under load a late answer from the edge made a
    node refuse a handoff ("Allocation failed") to a phone registered all along. The
    edge knows its registrations: it rings the phone, or answers 480 when it is not
    registered, as a phone that cannot ring. So every node reaches such a phone alike."""

    edge: str = ""
    at_edge: Callable[[str], bool] = lambda sip_user: False

    def dial(self, sip_user: str) -> str:
        if self.edge and self.at_edge(sip_user):
            return f"PJSIP/{sip_user}/sip:{sip_user}@{self.edge}"
        return f"PJSIP/{sip_user}"


def owner_of(channel_or_bridge_id: str) -> str:
    """The owning channel's id (the caller's, or a call-back's key) of any id we made."""
    return channel_or_bridge_id.split(SEP, 1)[0]


def role_of(channel_or_bridge_id: str) -> str:
    """The role an id we made names (``bridge``, ``ai``, ``agent``, ``forward``…); empty
    for an id we did not make (a caller's own channel)."""
    parts = channel_or_bridge_id.split(SEP)
    return parts[1] if len(parts) > 1 else ""


def bridge_of(owner: str) -> str:
    """The id of the call's one bridge."""
    return f"{owner}{SEP}bridge"


def role_id(owner: str, role: str) -> str:
    """The id of the one leg of its role in a call (a call-back's agent, its caller)."""
    return f"{owner}{SEP}{role}"


def new_leg_id(owner: str, role: str, number: int) -> str:
    """A leg id unique across controller restarts too: an adopted call's earlier legs
    keep their ids, so a counter alone could repeat one."""
    return f"{owner}{SEP}{role}{SEP}{number}{secrets.token_hex(2)}"


def call_key(event: Mapping[str, Any]) -> str:
    """ARI ordering key: the owner's channel id, which prefixes every id of its call."""
    for name in ("channel", "peer", "bridge"):
        obj = event.get(name)
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            return owner_of(str(obj["id"]))
    for name in ("playback", "recording"):
        obj = event.get(name)
        if isinstance(obj, dict) and isinstance(obj.get("target_uri"), str):
            return owner_of(str(obj["target_uri"]).split(":", 1)[-1])
    return "global"


async def add_when_in_stasis(
    ari: AriApi, bridge_id: str, channel: str | list[str], within: float = 2.0
) -> None:
    """addChannel, retried while Asterisk says the new leg is not in Stasis yet (422).

    A leg we just created (external media, a created agent leg) enters Stasis a moment
    after the REST call returns; its StasisStart is queued behind the handler that is
    creating it, so waiting for that event here would wait for ourselves.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await ari.bridges.add_channel(bridge_id, channel)
            return
        except AriUnprocessable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.002)


async def hang_up(ari: AriApi, channel_id: str, reason: HangupReason = "normal") -> None:
    """Hang up a leg that may already be gone."""
    with contextlib.suppress(AriNotFound):
        await ari.channels.hangup(channel_id, reason)


async def destroy(ari: AriApi, bridge_id: str) -> None:
    """Destroy a bridge that may already be gone."""
    with contextlib.suppress(AriNotFound):
        await ari.bridges.destroy(bridge_id)
