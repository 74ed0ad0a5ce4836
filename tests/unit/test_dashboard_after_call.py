"""History, contact pages, call back and recordings: who sees what, and why a request
is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from handoff.calls import CallDirection, CallOutcome
from handoff.live.xnode import reach_through
from handoff.recordings import CACHE_SUFFIX, compute_peaks
from tests.dashboard_fixtures import Browser
from tests.tools_fixtures import ToolServed, finished_call, write_wav


@pytest.fixture
async def browser(site: ToolServed) -> AsyncIterator[Browser]:
    opened = Browser(site.origin)
    yield opened
    await opened.close()


async def signed_in(site: ToolServed, login: str) -> Browser:
    browser = Browser(site.origin)
    assert (await browser.login(login)).status == 303
    return browser


async def history(browser: Browser, query: str = "") -> tuple[int, dict[str, Any]]:
    async with browser.http.get(f"/api/history{query}") as response:
        return response.status, await response.json()


async def test_an_agent_sees_only_the_calls_they_handled_and_a_supervisor_sees_all(
    site: ToolServed,
) -> None:
    alice, bob = site.people["alice"].id, site.people["bob"].id
    mine = await finished_call(site.store, number="+33100000001", agent_id=alice)
    await finished_call(site.store, number="+33100000002", agent_id=bob)
    await finished_call(site.store, number="+33100000003", outcome=CallOutcome.COMPLETED_BY_AI)
    agent, supervisor = await signed_in(site, "alice"), await signed_in(site, "sam")
    try:
        status, body = await history(agent)
        assert status == 200
        assert [c["id"] for c in body["calls"]] == [mine]
        assert body["calls"][0]["handled_by"]["display_name"] == "Alice"
        _, everything = await history(supervisor)
        assert len(everything["calls"]) == 3
        assert {c["handled_by"]["display_name"] if c["handled_by"] else "AI"
                for c in everything["calls"]} == {"Alice", "Bob", "AI"}
    finally:
        await agent.close()
        await supervisor.close()


async def test_history_filters_by_outcome_agent_date_and_number(site: ToolServed) -> None:
    alice = site.people["alice"].id
    await finished_call(site.store, number="+33111111111", agent_id=alice)
    await finished_call(site.store, number="+44222222222",
                        outcome=CallOutcome.CALLBACK_REQUESTED)
    supervisor = await signed_in(site, "sam")
    try:
        _, by_outcome = await history(supervisor, "?outcome=callback_requested")
        assert [c["caller_number"] for c in by_outcome["calls"]] == ["+44222222222"]
        _, by_agent = await history(supervisor, f"?agent={alice}")
        assert [c["caller_number"] for c in by_agent["calls"]] == ["+33111111111"]
        _, by_number = await history(supervisor, "?number=2222")
        assert [c["caller_number"] for c in by_number["calls"]] == ["+44222222222"]
        _, by_date = await history(supervisor, "?from=2000-01-01&to=2000-01-02")
        assert by_date["calls"] == []
    finally:
        await supervisor.close()


@pytest.mark.parametrize(("query", "reason"), [
    ("?outcome=happy", "outcome is one of"),
    ("?agent=alice", "agent is an agent id"),
    ("?from=yesterday", "from and to are dates"),
    ("?number=1%27%20OR%201=1", "number is digits"),
])
async def test_bad_history_filters_are_refused_with_a_reason(
    site: ToolServed, query: str, reason: str,
) -> None:
    supervisor = await signed_in(site, "sam")
    try:
        status, body = await history(supervisor, query)
        assert status == 400 and body["error"] == "bad_filter" and reason in body["reason"]
    finally:
        await supervisor.close()


async def test_history_page_renders_rows_and_asks_anonymous_visitors_to_sign_in(
    site: ToolServed, browser: Browser,
) -> None:
    async with browser.http.get("/history", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"].startswith("/login")
    await finished_call(site.store, number="+33999999999", agent_id=site.people["alice"].id)
    await browser.login("alice")
    async with browser.http.get("/history") as response:
        page = await response.text()
    assert response.status == 200 and "+33999999999" in page and "Handled by a person" in page


async def test_a_conversation_is_open_while_something_is_pending_and_resolves_by_hand(
    site: ToolServed,
) -> None:
    number, alice = "+33123123123", site.people["alice"].id
    await finished_call(site.store, number=number, agent_id=alice,
                        outcome=CallOutcome.CALLBACK_REQUESTED)
    agent = await signed_in(site, "alice")
    try:
        async with agent.http.get(f"/contacts/{number}") as response:
            page = await response.text()
        assert response.status == 200 and 'data-resolved="no"' in page
        flagged = await agent.post_json(f"/api/contacts/{number}/follow-up",
                                        {"follow_up": True})
        assert (await flagged.json())["follow_up"] is True
        resolved = await agent.post_json(f"/api/contacts/{number}/resolve", {})
        body = await resolved.json()
        assert body == {"number": number, "follow_up": False, "pending_calls": 0,
                        "resolved": True}
        note = await agent.post_json(f"/api/contacts/{number}/notes", {"text": "Sent a credit"})
        assert note.status == 201
        async with agent.http.get(f"/contacts/{number}") as response:
            page = await response.text()
        assert 'data-resolved="yes"' in page and "Sent a credit" in page
    finally:
        await agent.close()
    # Nothing pending from the start: resolved without anyone doing anything.
    await finished_call(site.store, number="+33777777777", agent_id=alice)
    supervisor = await signed_in(site, "sam")
    try:
        async with supervisor.http.get("/contacts/+33777777777") as response:
            assert 'data-resolved="yes"' in await response.text()
    finally:
        await supervisor.close()


async def test_an_agent_cannot_open_or_change_a_number_they_never_handled(
    site: ToolServed,
) -> None:
    await finished_call(site.store, number="+33555555555", agent_id=site.people["bob"].id)
    agent = await signed_in(site, "alice")
    try:
        async with agent.http.get("/contacts/+33555555555") as response:
            assert response.status == 404
        refused = await agent.post_json("/api/contacts/+33555555555/resolve", {})
        assert refused.status == 404 and (await refused.json())["error"] == "not_found"
        called = await agent.post_json("/api/contacts/+33555555555/call-back", {})
        assert called.status == 404
    finally:
        await agent.close()


async def test_contact_changes_need_the_csrf_token(site: ToolServed) -> None:
    number = "+33444444444"
    await finished_call(site.store, number=number, agent_id=site.people["alice"].id)
    agent = await signed_in(site, "alice")
    try:
        for path in ("resolve", "call-back", "notes", "follow-up"):
            refused = await agent.post_json(f"/api/contacts/{number}/{path}", {}, csrf="")
            assert refused.status == 403 and (await refused.json())["error"] == "csrf"
    finally:
        await agent.close()
    assert site.callbacks.placed == []


async def test_call_back_dials_the_viewers_phone_and_refuses_what_is_not_a_number(
    site: ToolServed,
) -> None:
    number = "+33612345678"
    await finished_call(site.store, number=number, agent_id=site.people["alice"].id)
    agent = await signed_in(site, "alice")
    try:
        placed = await agent.post_json(f"/api/contacts/{number}/call-back", {})
        assert placed.status == 202
        assert site.callbacks.placed == [(number, site.people["alice"].id, "sb-alice")]
        bad = await agent.post_json("/api/contacts/12&PJSIP%2F9/call-back", {})
        assert bad.status == 400 and (await bad.json())["error"] == "bad_number"
    finally:
        await agent.close()


async def test_a_call_back_goes_through_the_node_that_holds_the_agents_desk_phone_line(
    site: ToolServed, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In a cluster, Alice's desk phone is busy with the open line node B holds: her
    # call-back from node A's desk reaches her through node B (which bridges the leg
    # with that line), as an Accept or a transfer does, rather than ringing the phone.
    alice = site.people["alice"]
    number = "+33612345679"
    await finished_call(site.store, number=number, agent_id=alice.id)
    monkeypatch.setattr(site.store, "node", "node-a")
    async with site.store.transaction() as tx:
        await tx.agents.hold_line(alice.id, "node-b")
    agent = await signed_in(site, "alice")
    try:
        placed = await agent.post_json(f"/api/contacts/{number}/call-back", {})
        assert placed.status == 202, await placed.text()
        assert site.callbacks.placed == [(number, alice.id, reach_through("node-b", alice.id))]
        # Held by this node (or by none), the phone is dialled as it is.
        async with site.store.transaction() as tx:
            await tx.agents.hold_line(alice.id, "node-a")
        placed = await agent.post_json(f"/api/contacts/{number}/call-back", {})
        assert placed.status == 202 and site.callbacks.placed[-1] == (number, alice.id,
                                                                      "sb-alice")
    finally:
        await agent.close()


async def test_on_a_call_back_the_panel_ends_it_and_refuses_return_to_ai_and_transfer(
    site: ToolServed,
) -> None:
    alice = site.people["alice"]
    async with site.store.transaction() as tx:
        call = await tx.calls.create(caller_number="+33612345678", caller_channel_id="cb~c",
                                     direction=CallDirection.OUTBOUND)
        await tx.handoffs.assign(call.id, alice.id, reason="callback", summary="called back")
    site.callbacks.in_progress.add(call.id)
    agent = await signed_in(site, "alice")
    try:
        current = await (await agent.http.get("/api/calls/current")).json()
        assert current["call"]["direction"] == "outbound"
        back = await agent.post_json(f"/api/calls/{call.id}/return-to-ai", {})
        assert back.status == 409 and (await back.json())["error"] == "call_back"
        moved = await agent.post_json(f"/api/calls/{call.id}/transfer",
                                      {"to_agent_id": site.people["bob"].id, "note": ""})
        assert moved.status == 409 and (await moved.json())["error"] == "call_back"
        ended = await agent.post_json(f"/api/calls/{call.id}/end", {})
        assert ended.status == 200
    finally:
        await agent.close()
    assert site.callbacks.ended == [call.id]
    assert site.commands.panel == []  # none of it reached the call controller


async def test_recording_waveform_is_served_from_a_cache_next_to_the_recording(
    site: ToolServed,
) -> None:
    wav = write_wav(site.recordings / "call-x.wav")
    call_id = await finished_call(site.store, agent_id=site.people["alice"].id, recording=wav)
    agent = await signed_in(site, "alice")
    try:
        async with agent.http.get(f"/api/calls/{call_id}/peaks") as response:
            first = await response.json()
        assert response.status == 200
        assert first["buckets"] == 1000 and abs(first["duration_s"] - 2.0) < 0.01
        assert max(hi for _, hi in first["peaks"]) > 0.45
        cache = wav.with_name("call-x" + CACHE_SUFFIX)
        stamp = cache.stat().st_mtime_ns
        async with agent.http.get(f"/api/calls/{call_id}/peaks") as response:
            assert await response.json() == first
        assert cache.stat().st_mtime_ns == stamp  # read, not recomputed
        async with agent.http.get(f"/api/calls/{call_id}/recording.wav?download=1") as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"].startswith("attachment")
            assert (await response.read())[:4] == b"RIFF"
        async with agent.http.get(f"/calls/{call_id}/recording") as response:
            assert response.status == 200 and "waveform" in await response.text()
    finally:
        await agent.close()


async def test_recordings_of_other_agents_calls_and_outside_the_folder_are_not_served(
    site: ToolServed, tmp_path: Path,
) -> None:
    theirs = await finished_call(site.store, agent_id=site.people["bob"].id,
                                 recording=write_wav(site.recordings / "call-b.wav"))
    outside = await finished_call(site.store, agent_id=site.people["alice"].id,
                                  recording=write_wav(tmp_path / "elsewhere.wav"))
    agent = await signed_in(site, "alice")
    try:
        for call_id in (theirs, outside):
            async with agent.http.get(f"/api/calls/{call_id}/recording.wav") as response:
                assert response.status == 404
    finally:
        await agent.close()


def test_peaks_hold_the_minimum_and_maximum_of_each_slice(tmp_path: Path) -> None:
    waveform = compute_peaks(write_wav(tmp_path / "a.wav", seconds=1.0), buckets=10)
    assert waveform["buckets"] == 10 and len(waveform["peaks"]) == 10
    lows, highs = zip(*waveform["peaks"], strict=True)
    assert all(lo <= 0 <= hi for lo, hi in waveform["peaks"])
    # The test tone fades in over its first second: later slices are louder.
    assert highs[-1] > highs[0] and min(lows) < -0.4
    json.dumps(waveform)
