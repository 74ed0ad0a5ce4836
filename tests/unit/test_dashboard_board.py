"""The supervisor board's floor: a live call's transcript, the callers waiting, the
queues' wallboard; supervisors and admins only."""

from __future__ import annotations

from handoff.calls import Speaker
from handoff.queues import Strategy
from tests.dashboard_fixtures import Browsers, Served, offer_card, on_duty, signed_in
from web.bench import board as board_bench


async def add_queue(served: Served, name: str, *logins: str) -> int:
    async with served.store.transaction() as tx:
        queue = await tx.queues.create(name=name, strategy=Strategy.OFFER_ALL, ring_s=15,
                                       max_wait_s=120, service_level_s=20, no_answer_limit=3)
        await tx.queues.set_members(queue.id, [(served.people[login].id, 3)
                                               for login in logins])
        return queue.id


async def test_a_supervisor_reads_a_live_calls_transcript_and_an_agent_cannot(
    served: Served, browsers: Browsers,
) -> None:
    handoff = await offer_card(served.store, served.events)
    async with served.store.transaction() as tx:
        await tx.transcripts.append(handoff.call_id, Speaker.AI, "How can I help?")
        await tx.transcripts.append(handoff.call_id, Speaker.CALLER, "My invoice is wrong.")
    path = f"/api/supervisor/calls/{handoff.call_id}/transcript"
    for login in ("sam", "ada"):
        viewer = await signed_in(browsers, login)
        async with viewer.http.get(path) as response:
            body = await response.json()
        assert response.status == 200
        assert [(line["speaker"], line["text"]) for line in body["lines"]] == [
            ("ai", "How can I help?"), ("caller", "My invoice is wrong.")]
    agent = await signed_in(browsers, "alice")
    async with agent.http.get(path) as response:
        assert response.status == 403 and (await response.json())["error"] == "forbidden"
    async with viewer.http.get(
            "/api/supervisor/calls/00000000-0000-0000-0000-000000000000/transcript") as response:
        assert response.status == 404 and (await response.json())["reason"] == "no such call"


async def test_the_board_says_each_calls_topic_in_words(
    served: Served, browsers: Browsers,
) -> None:
    handoff = await offer_card(served.store, served.events)
    supervisor = await signed_in(browsers, "sam")
    async with supervisor.http.get("/api/supervisor/calls") as response:
        [call] = (await response.json())["calls"]
    assert (call["id"], call["topic"], call["topic_name"]) == (
        handoff.call_id, "billing", "Billing")
    assert call["answered_at"]  # the page counts the duration up from it


async def test_the_floor_lists_waiting_callers_and_each_queues_figures(
    served: Served, browsers: Browsers,
) -> None:
    sales = await add_queue(served, "Sales", "alice", "bob")
    await add_queue(served, "Support", "bob")
    queued = await offer_card(served.store, served.events, caller_name="Queued Caller",
                              priority=10, queue_id=sales)
    unqueued = await offer_card(served.store, served.events, caller_name="Anyone's Caller")
    await on_duty(await signed_in(browsers, "alice"))
    supervisor = await signed_in(browsers, "sam")
    async with supervisor.http.get("/api/supervisor/floor") as response:
        floor = await response.json()
    assert response.status == 200
    # Most urgent first; each with its wait's start, its priority in words and its queue.
    assert [(w["handoff_id"], w["caller_name"], w["urgency"], w["queue"])
            for w in floor["waiting"]] == [
        (queued.id, "Queued Caller", "emergency", "Sales"),
        (unqueued.id, "Anyone's Caller", "normal", "")]
    assert all(w["waiting_since"] for w in floor["waiting"])
    by_name = {q["name"]: q for q in floor["queues"]}
    assert by_name["Sales"]["waiting"] == 1
    assert by_name["Sales"]["longest_waiting_since"] == floor["waiting"][0]["waiting_since"]
    assert by_name["Sales"]["agents"] == {"on_call": 0, "wrap_up": 0, "available": 1,
                                          "away": 0, "off_duty": 1}
    # No card of today is over yet: no service level to state.
    assert by_name["Sales"]["service_level"] is None
    assert by_name["Support"]["waiting"] == 0
    assert by_name["Support"]["longest_waiting_since"] is None
    agent = await signed_in(browsers, "alice")
    async with agent.http.get("/api/supervisor/floor") as response:
        assert response.status == 403


async def test_the_board_benchmark_delivers_every_line_and_new_call_to_every_tab() -> None:
    result = await board_bench.measure(calls=3, tabs=2, rounds=2)
    assert (result["lines"], result["new_calls"], result["missing"]) == (6, 1, 0)
    assert set(result["transcript_line"]) == {"p50_ms", "p99_ms", "max_ms"}
    assert result["new_row_p50_ms"] is not None
