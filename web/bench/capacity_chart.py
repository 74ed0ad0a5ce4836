"""`switchboard bench capacity`'s run as one SVG picture."""

from __future__ import annotations

from html import escape
from typing import Any

from web.bench.capacity_handoffs import move_gap_ms
from web.dashboard.charts import FONT, TEXT, column_chart


def chart(result: dict[str, Any]) -> str:
    """The run as one SVG picture: a panel of columns per figure, step by step, drawn by
    the dashboard's own chart code (web.dashboard.charts)."""
    steps = result["steps"]
    roles = (("pbx", "pbx"), ("controller", "ctl"), ("rig_carrier", "carrier"),
             ("rig_world", "phones"), ("rig_ai", "ai"))
    panels = [
        ("CPU, % of one core: product's Asterisk, controller, carrier, callers' phones, AI",
         [(f"{s['calls']} {short}", s["cpu_pct_of_core"][who]) for s in steps
          for who, short in roles]),
        ("Product's Asterisk per call, % of one core",
         [(str(s["calls"]), s["cpu_pct_of_core"]["pbx_per_call"]) for s in steps]),
        ("AI packets short per call in the window, by link (pbx, trunk, carrier to phone)",
         [(f"{s['calls']} {link.split('_')[0]}", round(short / max(s["up"], 1), 1))
          for s in steps for link, short in s["ai_packets_short"].items()]),
        ("Caller's longest gap between packets, ms (knee over 60)",
         [(str(s["calls"]), s["caller_gap_max_ms"]) for s in steps]),
        ("Controller's loop lag p99, ms (knee over 50)",
         [(str(s["calls"]), s["loop_lag_ms"]["p99"] or 0.0) for s in steps]),
    ]
    moved = [s for s in steps if "handoffs" in s]
    if moved:
        panels.append((
            "Handoffs: connect p99 and a caller's longest gap across the moves, ms "
            "(knee over 60)",
            [bar for s in moved for bar in (
                (f"{s['calls']} connect", s["handoffs"]["connect_ms"]["p99"] or 0.0),
                (f"{s['calls']} gap", move_gap_ms(s["handoffs"])))]))
    width, height, heading = 720, 200, 22
    parts = []
    for i, (title, bars) in enumerate(panels):
        top = i * (height + heading)
        parts.append(f'<text x="8" y="{top + 16}" {FONT} fill="{TEXT}">{escape(title)}</text>')
        panel = column_chart(bars, title=title, width=width, height=height)
        parts.append(str(panel).replace("<svg ", f'<svg x="0" y="{top + heading}" ', 1))
    total = len(panels) * (height + heading)
    knee = result["knee_calls"] or "not reached"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {total}" '
            f'width="{width}" height="{total}"><title>switchboard bench capacity: knee '
            f'{knee}</title><rect width="100%" height="100%" fill="white"/>'
            + "".join(parts) + "</svg>\n")
