"""Blocking SIP scanners: the counting and its exemptions (the PBX's side is proven on a
real Asterisk in tests/integration/test_sip_security.py), and the Admin API that lists
and lifts blocks."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from handoff.store import Store
from tests.dashboard_fixtures import Browser
from tests.store_fixtures import FakeClock
from tests.tools_fixtures import ToolServed
from web.sip_blocks import BlockPolicy, SipBlocker


class FakePbx:
    def __init__(self) -> None:
        self.blocked: tuple[str, ...] = ()
        self.reloads = 0

    async def apply(self, blocked: tuple[str, ...]) -> None:
        self.blocked, self.reloads = blocked, self.reloads + 1


def failure(address: str, event: str = "ChallengeResponseFailed") -> dict[str, str]:
    return {"Event": event, "Service": "PJSIP", "RemoteAddress": f"IPV4/UDP/{address}/5060"}


def blocker_for(store: Store, pbx: FakePbx, now: list[float], **policy: object) -> SipBlocker:
    return SipBlocker(store, BlockPolicy(**{"block_after": 3, "block_window_s": 60.0,  # type: ignore[arg-type]
                                            **policy}),
                      CollectorRegistry(), applied=lambda: pbx.blocked, apply=pbx.apply,
                      exempt=lambda: ["192.0.2.10"], clock=lambda: now[0])


async def test_failures_within_the_window_block_an_address_once(store: Store) -> None:
    pbx, now = FakePbx(), [0.0]
    blocker = blocker_for(store, pbx, now)
    await blocker.observe(failure("203.0.113.5"))
    now[0] = 61.0  # the first failure has left the window
    await blocker.observe(failure("203.0.113.5", "InvalidAccountID"))
    await blocker.observe(failure("203.0.113.5", "InvalidPassword"))
    assert not pbx.blocked
    await blocker.observe({"Event": "ChallengeSent", "RemoteAddress": "IPV4/UDP/203.0.113.5/1"})
    assert not pbx.blocked  # a challenge is what every phone gets first: not a failure
    await blocker.observe(failure("203.0.113.5"))
    assert pbx.blocked == ("203.0.113.5",)
    for _ in range(5):  # blocked already: the PBX's 403s (FailedACL) and stragglers
        await blocker.observe(failure("203.0.113.5"))
        await blocker.observe(failure("203.0.113.5", "FailedACL"))
    assert pbx.reloads == 1
    async with store.transaction() as tx:
        assert [b.address for b in await tx.blocks.active()] == ["203.0.113.5"]


@pytest.mark.parametrize("address", ["192.0.2.10", "10.1.2.3", "?"])
async def test_trunks_listed_networks_and_unknown_addresses_are_never_blocked(
    store: Store, address: str,
) -> None:
    pbx, now = FakePbx(), [0.0]
    blocker = blocker_for(store, pbx, now, never_block=("10.0.0.0/8",))
    for _ in range(10):
        await blocker.observe(failure(address))
    assert not pbx.blocked


async def test_block_after_zero_turns_blocking_off(store: Store) -> None:
    pbx, now = FakePbx(), [0.0]
    blocker = blocker_for(store, pbx, now, block_after=0)
    for _ in range(10):
        await blocker.observe(failure("203.0.113.5"))
    assert not pbx.blocked


async def test_a_block_that_runs_out_leaves_the_pbx(store: Store, clock: FakeClock) -> None:
    pbx, now = FakePbx(), [0.0]
    blocker = blocker_for(store, pbx, now, block_for_s=600.0)
    for _ in range(3):
        await blocker.observe(failure("203.0.113.5"))
    assert pbx.blocked == ("203.0.113.5",)
    clock.advance(599)
    assert not await blocker.refresh()
    clock.advance(2)
    assert await blocker.refresh()
    assert not pbx.blocked


async def test_admins_list_and_lift_blocks_and_the_lift_is_audited(site: ToolServed) -> None:
    async with site.store.transaction() as tx:
        await tx.blocks.block("203.0.113.5", 3600, 20)
    admin, agent = Browser(site.origin), Browser(site.origin)
    try:
        assert (await admin.login("ada")).status == 303
        assert (await agent.login("alice")).status == 303
        async with agent.http.get("/api/admin/sip-blocks") as refused:
            assert refused.status == 403
        async with admin.http.get("/api/admin/sip-blocks") as listed:
            blocks = (await listed.json())["blocks"]
        assert [(b["address"], b["failures"]) for b in blocks] == [("203.0.113.5", 20)]
        lift = "/api/admin/sip-blocks/203.0.113.5/lift"
        assert (await agent.post_json(lift, {})).status == 403
        assert (await admin.post_json(lift, {}, csrf="")).status == 403
        assert (await admin.post_json("/api/admin/sip-blocks/1.2.3/lift", {})).status == 400
        lifted = await admin.post_json(lift, {})
        assert lifted.status == 200
        assert (await lifted.json())["applied"] is False  # no PBX behind this test site
        assert (await admin.post_json(lift, {})).status == 404  # not blocked any more
        async with site.store.transaction() as tx:
            assert await tx.blocks.active() == []
            actions = [(e.actor, e.action, e.subject) for e in await tx.audit.recent()]
        assert ("ada", "sip_block_lifted", "203.0.113.5") in actions
    finally:
        await admin.close()
        await agent.close()
