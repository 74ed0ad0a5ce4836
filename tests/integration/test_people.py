"""A disabled person's desk phone on the real PBX: once the product re-renders the
endpoints (web.telephony.sync_directory, what the admin page's change and the CLI's
periodic check both call), Asterisk refuses the phone's next REGISTER."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handoff.agents import AgentRole, EndpointKind
from pbx import runtime
from tests.integration.asterisk_helpers import ari
from tests.sip_phone import SipError, SipPhone
from tests.waiting import until
from web import people
from web.bench.dashboard_site import cheap_passwords, open_store
from web.telephony import routes_and_agents, sync_directory

pytestmark = pytest.mark.integration


async def test_a_disabled_persons_desk_phone_can_no_longer_register(
    installation: runtime.Installation, state_dir: Path, tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    async with store.transaction() as tx:
        bea = await people.add(tx, cheap_passwords(), login="bea", display_name="Bea",
                               role=AgentRole.AGENT, endpoint_kind=EndpointKind.DESKPHONE,
                               actor="cli")
    routes, agents = await routes_and_agents(store)
    pbx = runtime.new_instance(installation, f"people{os.getpid()}", state_dir,
                               routes=routes, agents=agents)
    await pbx.start()

    async def endpoint_state(wanted: str) -> bool:
        # ARI remembers endpoints it has seen: a removed one answers "offline" (or 404).
        status, endpoint = await ari(pbx, "GET", "/endpoints/PJSIP/agent-bea")
        return (status == 404 and wanted == "offline") or (
            status == 200 and endpoint["state"] == wanted)

    try:
        # Nothing changed in the store: the product does not reload for nothing.
        assert not await sync_directory(store, pbx)
        async with SipPhone("agent-bea", bea.sip_password,
                            ("127.0.0.1", pbx.sip_port)) as phone:
            await until(lambda: endpoint_state("online"), 10,
                        why="the registered desk phone's endpoint never showed online")
            async with store.transaction() as tx:
                await people.disable(tx, bea.agent.id, actor="ada")
            assert await sync_directory(store, pbx)
            with pytest.raises(SipError) as refused:
                await phone.register()
            assert refused.value.status in (401, 403, 404)
            # No endpoint any more: nothing dials it.
            assert "Unable to find object agent-bea" in await pbx.cli(
                "pjsip show endpoint agent-bea")
            await until(lambda: endpoint_state("offline"), 10,
                        why="the disabled person's endpoint still shows online")
            phone.registered = False  # nothing to unregister on the way out
    finally:
        await pbx.stop()
        await store.engine.dispose()
