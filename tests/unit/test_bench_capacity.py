"""The capacity benchmark's own judging: the batch tone count, the kernel's drop count
and the chart."""

from __future__ import annotations

import asyncio
import os
import socket
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from web.bench.audio import (
    AGENT_HZ,
    AI_HZ,
    FRAME,
    Received,
    RtpProbe,
    label,
    tone,
    ulaw_decode,
    ulaw_encode,
    voiced_by,
)
from web.bench.capacity import over_window, udp_drops
from web.bench.capacity_chart import chart
from web.bench.capacity_handoffs import desk_phones
from web.bench.world import World


def test_the_batch_count_of_the_ais_frames_agrees_with_labelling_each_frame() -> None:
    mixed = np.concatenate([tone(AI_HZ, 0.2), tone(AGENT_HZ, 0.1), np.zeros(800, np.int16),
                            tone(AI_HZ, 0.1, amplitude=0.001), tone(AI_HZ, 0.1)])
    payloads = [ulaw_encode(mixed[i : i + FRAME]) for i in range(0, len(mixed), FRAME)]
    one_by_one = sum(1 for p in payloads if label(ulaw_decode(p)) == "ai")
    assert one_by_one == 15  # 10 + 5 loud AI frames; the agent, silence and a whisper not
    assert voiced_by(AI_HZ, payloads) == one_by_one
    assert voiced_by(AI_HZ, [b"\x7f" * 12]) == 0  # a short packet is nobody's voice


async def test_the_caller_stream_reports_its_longest_gap_and_the_ais_share() -> None:
    world = World("http://127.0.0.1:1", ("u", "p"))
    probe = RtpProbe(None)
    ai = ulaw_encode(tone(AI_HZ, 0.02))
    probe.received = [Received(at, ai) for at in (1.0, 1.02, 1.04, 1.11, 1.13)]
    world.probes["+1"] = probe
    stats = await world.stream_stats("+1", 1.0, 1.2)
    assert stats["packets"] == 5 and stats["late"] == 1 and stats["ai_sampled"] == 5
    assert stats["gap_max_ms"] == 70.0


async def test_a_process_that_does_not_read_its_socket_shows_the_kernels_drops() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        before = udp_drops([os.getpid()])
        for _ in range(200):  # far more 172-byte RTP packets than a 4 KiB buffer holds
            sender.sendto(b"\x80" + bytes(171), receiver.getsockname())
        await asyncio.sleep(0)
        assert udp_drops([os.getpid()]) - before > 100
    finally:
        receiver.close()
        sender.close()


def test_the_chart_is_one_svg_with_a_panel_per_figure() -> None:
    def a_step(calls: int) -> dict[str, Any]:
        return {"calls": calls, "up": calls,
                "cpu_pct_of_core": {"pbx": 30.0, "controller": 5.0, "rig_carrier": 10.0,
                                    "rig_world": 20.0, "rig_ai": 9.0, "pbx_per_call": 1.2},
                "ai_packets_short": {"pbx_sent": 0, "trunk": 4, "carrier_to_phone": 500},
                "caller_gap_max_ms": 24.1, "loop_lag_ms": {"p99": 3.0},
                "handoffs": {"connect_ms": {"p99": 41.0}, "caller_gap_ms": {"max": 24.0},
                             "back_gap_ms": {"max": 62.5}}}

    svg = chart({"knee_calls": 50, "steps": [a_step(25), a_step(50)]})
    root = ET.fromstring(svg)  # well-formed
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert title is not None and (title.text or "").endswith("knee 50")
    panels = root.findall("{http://www.w3.org/2000/svg}svg")
    assert len(panels) == 6  # the handoffs' panel too: the steps ran some
    bars = {r.get("data-label"): r.get("data-value")
            for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"}
    assert {"25 pbx", "50 phones", "50 ai", "50 carrier", "50 connect"} <= bars.keys()
    assert bars["50 gap"] == "62.5"  # the longer of the two moves': back to the AI


def test_a_counter_read_late_is_scaled_to_the_window_not_counted_as_loss() -> None:
    # Two legs sending 50 packets a second; the second leg's counter was read 1 s late
    # at the end of a 10 s window (a slow ARI reply): it grew by 550, not 500.
    before = {"a": {"txcount": 100, "at": 0.0}, "b": {"txcount": 100, "at": 0.0}}
    after = {"a": {"txcount": 600, "at": 10.0}, "b": {"txcount": 650, "at": 11.0},
             "gone": {"txcount": 9, "at": 10.0}}  # a leg not read before counts nothing
    assert over_window(before, after, "txcount", 10.0) == 1000.0


def test_the_agents_desk_phones_follow_the_handoff_rate_and_none_at_zero() -> None:
    # At 0 the PBX knows no extra phone and the run seats nobody (no handoffs reported).
    assert desk_phones(0) == ()
    two_a_second = desk_phones(2)
    assert len({p.name for p in two_a_second}) == len(two_a_second) > len(desk_phones(0.5))
    assert all(p.kind == "deskphone" and not p.contact for p in two_a_second)  # they register
