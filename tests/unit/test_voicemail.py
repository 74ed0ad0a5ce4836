"""A voicemail (an assistant's fallback, issue 12 item 4) as the desk sees it afterwards:
a call-back request in the history, with the message to play. Who may hear it: those
who would have got its card (members of the assistant's default queue, or every agent
for an assistant without one), supervisors and admins; nobody else, as for recordings.
The call itself (prompt, beep, the caller's words kept) is tested on real Asterisk in
tests/integration/test_business_hours.py."""

from __future__ import annotations

from handoff.assistants import FallbackKind
from handoff.calls import CallEvent, CallOutcome
from handoff.queues import Strategy
from tests.dashboard_fixtures import Browser
from tests.tools_fixtures import ToolServed, finished_call, write_wav


async def voicemail(site: ToolServed, assistant: str, number: str) -> str:
    """An ended call of ``assistant`` in which the caller left a message."""
    async with site.store.transaction() as tx:
        row = await tx.assistants.by_name(assistant)
        if row is None:
            row = await tx.assistants.create(
                name=assistant, numbers=[], control_token_hash=f"h-{assistant}",
                fallback_kind=FallbackKind.VOICEMAIL)
        call = await tx.calls.create(caller_number=number, caller_channel_id=f"c-{number}",
                                     assistant_id=row.id)
        await tx.calls.apply(call.id, CallEvent.ANSWER, bridge_id="b")
        await tx.calls.voicemail_begins(call.id)
        await tx.calls.close(call.id, CallOutcome.CALLBACK_REQUESTED)
        await tx.calls.set_recording(call.id, str(write_wav(site.recordings /
                                                            f"call-{call.id}.wav")))
    return call.id


async def seen_by(site: ToolServed, login: str) -> tuple[set[str], dict[str, int]]:
    """The calls in the person's history, and what playing each recording answers."""
    browser = Browser(site.origin)
    try:
        assert (await browser.login(login)).status == 303
        async with browser.http.get("/api/history") as response:
            calls = (await response.json())["calls"]
        played = {}
        for call in calls:
            async with browser.http.get(f"/api/calls/{call['id']}/recording.wav") as audio:
                played[call["id"]] = audio.status
        return {c["id"] for c in calls if c["voicemail_at"]}, played
    finally:
        await browser.close()


async def test_a_voicemail_is_a_call_back_its_queues_members_may_play(
    site: ToolServed,
) -> None:
    alice = site.people["alice"].id
    queued = await voicemail(site, "sales", "+33100000001")
    unqueued = await voicemail(site, "front", "+33100000002")
    async with site.store.transaction() as tx:
        sales = await tx.assistants.by_name("sales")
        assert sales is not None
        queue = await tx.queues.create(name="sales", strategy=Strategy.OFFER_ALL, ring_s=15,
                                       max_wait_s=60, service_level_s=20, no_answer_limit=3)
        await tx.queues.set_members(queue.id, [(alice, 3)])
        await tx.queues.set_assistants(queue.id, [sales.id])
    # A call-back without a message stays the supervisors' to hand out, as before.
    await finished_call(site.store, number="+33100000003",
                        outcome=CallOutcome.CALLBACK_REQUESTED)

    assert await seen_by(site, "alice") == ({queued, unqueued},
                                            {queued: 200, unqueued: 200})
    # Bob is in no queue of sales': its message is not his to hear.
    assert await seen_by(site, "bob") == ({unqueued}, {unqueued: 200})
    supervisor, _ = await seen_by(site, "sam")
    assert supervisor == {queued, unqueued}
    bob = Browser(site.origin)
    try:
        assert (await bob.login("bob")).status == 303
        async with bob.http.get(f"/api/calls/{queued}/recording.wav") as response:
            assert response.status == 404
        # The caller's page, where the call-back is made, says a message was left.
        async with bob.http.get("/contacts/+33100000002") as response:
            assert response.status == 200
            assert "left a voicemail at" in await response.text()
        async with bob.http.get("/contacts/+33100000001") as response:
            assert response.status == 404
        async with bob.http.get("/history") as response:
            assert "play the voicemail" in await response.text()
    finally:
        await bob.close()
