"""Agents whose phone cannot ring are set away, after a grace, with an audit line."""

from __future__ import annotations

import asyncio

from handoff.agents import Presence
from handoff.events import AGENTS_TOPIC, EventHub
from handoff.phone_watch import PhoneWatch
from handoff.store import Store
from handoff.store.models import Agent


class Pbx:
    """What the PBX says of each phone: registered (True), not (False), cannot tell."""

    def __init__(self) -> None:
        self.phones: dict[str, bool | None] = {}

    async def phone_registered(self, sip_user: str) -> bool | None:
        return self.phones.get(sip_user, True)


async def on_duty(store: Store, *logins: str) -> list[Agent]:
    async with store.transaction() as tx:
        agents = []
        for login in logins:
            agent = await tx.agents.create(login=login, display_name=login.title(),
                                           sip_user=f"sb-{login}", sip_password="s3cret-x")
            await tx.agents.set_duty(agent.id, True)
            agents.append(await tx.agents.set_presence(agent.id, Presence.AVAILABLE))
    return agents


async def presence(store: Store, agent: Agent) -> Presence:
    async with store.transaction() as tx:
        return (await tx.agents.get(agent.id)).presence


async def test_an_agent_whose_phone_stays_unregistered_is_set_away_after_the_grace(
    store: Store,
) -> None:
    ada, bob = await on_duty(store, "ada", "bob")
    pbx, events = Pbx(), EventHub()
    watch = PhoneWatch(store, events, pbx.phone_registered, grace_checks=2)
    pbx.phones["sb-ada"] = False
    async with events.subscribe(AGENTS_TOPIC) as changes:
        assert await watch.check_once() == []  # a reload looks like this for a moment
        assert await presence(store, ada) is Presence.AVAILABLE
        assert await watch.check_once() == [ada.id]
        told = await asyncio.wait_for(changes.get(), 1)
    assert (told["type"], told["agent_id"]) == ("agent_changed", ada.id)
    assert (await presence(store, ada), await presence(store, bob)) == (
        Presence.AWAY, Presence.AVAILABLE)
    async with store.transaction() as tx:
        [line] = [e for e in await tx.audit.recent() if e.action == "presence_change"]
    assert (line.actor, line.subject) == ("controller", f"agent:{ada.id}")
    assert line.detail["why"] == "phone_unregistered"
    # Away now: she is not checked again, and coming back is hers to do.
    assert await watch.check_once() == []


async def test_a_phone_back_in_time_or_a_pbx_that_cannot_tell_changes_nothing(
    store: Store,
) -> None:
    [ada] = await on_duty(store, "ada")
    pbx = Pbx()
    watch = PhoneWatch(store, EventHub(), pbx.phone_registered, grace_checks=2)
    for says in (False, True, False, None, None, True, False):
        pbx.phones["sb-ada"] = says
        assert await watch.check_once() == []
    assert await presence(store, ada) is Presence.AVAILABLE


async def test_an_agent_who_goes_off_duty_meanwhile_is_left_alone(store: Store) -> None:
    [ada] = await on_duty(store, "ada")
    pbx = Pbx()
    watch = PhoneWatch(store, EventHub(), pbx.phone_registered, grace_checks=2)
    pbx.phones["sb-ada"] = False
    await watch.check_once()
    async with store.transaction() as tx:
        await tx.agents.set_duty(ada.id, False)
    assert await watch.check_once() == []
    async with store.transaction() as tx:
        await tx.agents.set_duty(ada.id, True)
    # Back on duty, the count starts again: one check is not enough.
    assert await watch.check_once() == []
    assert await presence(store, ada) is Presence.AVAILABLE
