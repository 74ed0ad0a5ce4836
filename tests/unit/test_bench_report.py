"""The handoff benchmark's own arithmetic: percentiles, ratios and where the time went."""

from __future__ import annotations

import time
from typing import Any

import pytest

from web.bench import line_soak
from web.bench.audio import AI_HZ, FRAME, RATE, Received, RtpProbe, tone, ulaw_encode
from web.bench.handoff import AgentUps, report, steps, summary


def test_summary_gives_p50_p99_and_max_and_nothing_for_no_values() -> None:
    assert summary([30.0, 10.0, 20.0]) == {"p50": 20.0, "p99": 30.0, "max": 30.0}
    assert summary([]) == {"p50": None, "p99": None, "max": None}


async def test_an_agent_leg_is_up_when_asterisk_says_so_not_when_we_hear_of_it() -> None:
    ups = AgentUps()
    wall = time.time() - 0.250  # Asterisk stamped the event a quarter second ago
    # Asterisk's form: 2026-11-22T11:40:00.123+0000
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    stamp = f"{seconds}.{int(wall % 1 * 1000):03d}+0000"
    await ups.on_ari({"type": "ChannelStateChange", "timestamp": stamp,
                      "channel": {"id": "call~agent-1", "state": "Up"}})
    await ups.on_ari({"type": "ChannelStateChange", "timestamp": stamp,
                      "channel": {"id": "call~agent-2", "state": "Ringing"}})
    assert list(ups.ours) == ["call~agent-1"]
    assert time.monotonic() - ups.ours["call~agent-1"] == pytest.approx(0.250, abs=0.05)


async def test_the_queue_agent_is_the_member_channel_going_up() -> None:
    ups = AgentUps()
    await ups.on_ami({"Event": "Newstate", "Channel": "PJSIP/desk-ada-00000007",
                      "ChannelStateDesc": "Ringing"})
    await ups.on_ami({"Event": "Newstate", "Channel": "PJSIP/carrier-00000003",
                      "ChannelStateDesc": "Up"})
    assert ups.queue == []
    await ups.on_ami({"Event": "Newstate", "Channel": "PJSIP/desk-ada-00000007",
                      "ChannelStateDesc": "Up"})
    assert len(ups.queue) == 1


def test_the_report_splits_connect_time_into_answer_and_media_path() -> None:
    accepted = 100.0
    results: list[dict[str, Any]] = [
        {"connect_ms": 30.0, "caller_gap_ms": 20.0, "dropped": False, "failed": False,
         **steps(accepted, accepted + 0.012, accepted + 0.030)},
        {"connect_ms": None, "dropped": True, "failed": True},  # never heard: no steps
    ]
    out = report(results, reinvites=0)
    assert out["agent_up_ms"]["p50"] == pytest.approx(12.0)
    assert out["heard_after_up_ms"]["p50"] == pytest.approx(18.0)
    assert (out["dropped_calls"], out["failed_handoffs"]) == (1, 1)
    assert steps(accepted, None, accepted + 0.03) == {}


def heard(*frames: tuple[float, bool]) -> RtpProbe:
    """A probe that received these frames: (arrival in s, audible or silent)."""
    voice = ulaw_encode(tone(AI_HZ, FRAME / RATE))
    silence = ulaw_encode(tone(AI_HZ, FRAME / RATE, amplitude=0.0))
    probe = RtpProbe(None)
    probe.received = [Received(at, voice if audible else silence) for at, audible in frames]
    return probe


def test_the_gap_across_a_move_counts_a_silence_running_into_it_but_not_one_before() -> None:
    # Audible every 20 ms, except a lost frame at 0.10 (before the move at 0.20) and a
    # silent one at 0.24 (during it).
    probe = heard(*[(n * 0.02, n not in (5, 12)) for n in range(20)])
    assert probe.longest_gap_ms(0.0, 0.4) == pytest.approx(40.0)
    assert probe.longest_gap_ms(0.20, 0.4) == pytest.approx(40.0)  # the one at 0.24
    only_before = [(n * 0.02, n != 5) for n in range(20)]
    assert heard(*only_before).longest_gap_ms(0.20, 0.4) == pytest.approx(20.0)
    # A silence already running when the move starts counts from its beginning.
    assert heard((0.10, True), (0.26, True)).longest_gap_ms(0.20, 0.4) == pytest.approx(160.0)


def test_the_soak_reports_handoffs_drops_reopens_and_the_refreshes_it_saw() -> None:
    results: list[dict[str, Any]] = [
        {"connect_ms": 25.0, "caller_gap_ms": 20.0, "dropped": False, "failed": False},
        {"connect_ms": 31.0, "caller_gap_ms": 22.0, "dropped": False, "failed": False},
        {"connect_ms": None, "dropped": True, "failed": True},
    ]
    # The tab saw two lines (one re-open): neither INVITE asked for a session timer.
    seen = {"lines": [{"session_expires": None, "timer_running": False}] * 2, "refreshes": 0}
    out = line_soak.report(results, ["TimeoutError: no card"], seen, invites=2,
                           legs={"line-1-a;leg", "line-1-b;leg"}, minutes=3.0, every_s=30.0,
                           held_s=181.04, line_at_end="idle", stopped_early=False)
    assert (out["handoffs"], out["handoffs_done"], out["dropped_calls"],
            out["failed_handoffs"]) == (4, 2, 1, 2)
    assert out["errors"] == ["TimeoutError: no card"] and out["held_s"] == 181.0
    assert out["connect_ms"]["p50"] == pytest.approx(28.0)
    assert out["line_reopens"] == {"invites_at_the_tab_after_the_first": 1,
                                   "line_legs_held": 2}
    assert out["session_refreshes"] == {
        "session_expires_in_the_line_invite": [None, None],
        "jssip_session_timer_running": [False, False],
        "reinvites_or_updates_at_the_tab": 0,
    }
    assert out["line_at_end"] == "idle"
