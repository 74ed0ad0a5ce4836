"""People disabled and removed (handoff.store.agents_repo): nobody locks the last admin
out, a disabled person takes no card, and a removed one's history stays."""

from __future__ import annotations

import pytest

from handoff.agents import AgentRole
from handoff.store import LastAdmin, OffDuty, Removed, Store
from tests.unit.test_store import accept, new_agents, new_call, offered_handoff


async def test_the_last_enabled_admin_cannot_be_disabled_or_removed(store: Store) -> None:
    first, second, agent = await new_agents(store, 3, on_duty=False)
    async with store.transaction() as tx:
        await tx.agents.set_role(first.id, AgentRole.ADMIN)
        await tx.agents.set_role(second.id, AgentRole.ADMIN)
        await tx.agents.disable(first.id, actor="ada")
        # Disabling a plain agent needs no admin left over.
        await tx.agents.disable(agent.id, actor="ada")
    for act in ("disable", "remove"):
        with pytest.raises(LastAdmin):
            async with store.transaction() as tx:
                await getattr(tx.agents, act)(second.id, actor="ada")
    async with store.transaction() as tx:
        assert (await tx.agents.get(second.id)).enabled
        # Once the first is back, either may go.
        await tx.agents.enable(first.id, actor="ada")
        assert not (await tx.agents.remove(second.id, actor="ada")).enabled


async def test_a_disabled_agent_goes_off_duty_and_cannot_accept(store: Store) -> None:
    disabled, other = await new_agents(store, 2)
    handoff = await offered_handoff(store, await new_call(store))
    async with store.transaction() as tx:
        agent = await tx.agents.disable(disabled.id, actor="ada")
        assert not agent.on_duty and agent.disabled_at is not None
        assert [a.id for a in await tx.agents.available()] == [other.id]
        actions = [e.action for e in await tx.audit.recent(10)]
    assert "agent_disabled" in actions and "duty_change" in actions
    with pytest.raises(OffDuty):
        await accept(store, handoff.id, disabled.id)
    # Going on duty again is a write the lifecycle allows, but routing still skips them.
    async with store.transaction() as tx:
        await tx.agents.set_duty(disabled.id, True)
        assert [a.id for a in await tx.agents.available()] == [other.id]


async def test_a_removed_agent_leaves_the_lists_but_not_the_history(store: Store) -> None:
    gone, stays = await new_agents(store, 2)
    handoff = await offered_handoff(store, await new_call(store))
    await accept(store, handoff.id, gone.id)
    async with store.transaction() as tx:
        removed = await tx.agents.remove(gone.id, actor="ada")
        assert removed.removed_at is not None and not removed.enabled
        assert [a.id for a in await tx.agents.all()] == [stays.id]
        assert [a.id for a in await tx.agents.all(include_removed=True)] == [gone.id, stays.id]
        assert (await tx.handoffs.get(handoff.id)).accepted_by == gone.id
        assert (await tx.agents.by_login(gone.login)) is not None  # the login stays taken
        subjects = {(e.action, e.subject) for e in await tx.audit.recent(20)}
    assert ("agent_removed", f"agent:{gone.id}") in subjects
    with pytest.raises(Removed):
        async with store.transaction() as tx:
            await tx.agents.enable(gone.id, actor="ada")
