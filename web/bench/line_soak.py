"""`switchboard bench handoff --agent browser --line open --soak MINUTES --every SECONDS`:
one open line held for a whole shift-like run, a handoff on it every N seconds.

A line lasts a shift only if nothing along the way ends it: a SIP session timer nobody
refreshes, a media timeout while the agent listens, a WebSocket that drops. The soak
keeps Alice's Desk tab on duty for the whole run (the real thing: Chromium, JsSIP,
WebRTC, as `bench handoff --agent browser` drives it) and puts a caller through to her
every ``--every`` seconds, each handoff measured as that benchmark measures one.

It reports the handoffs done, dropped and failed, the line's re-opens (INVITEs that
reached the tab after the first, and the line legs the controller held), and what it
saw of session refreshes: whether the line's INVITE asked for a session timer
(Session-Expires), whether JsSIP ran one, and the re-INVITEs and UPDATEs that reached
the tab on its line. It reports what it saw, not what the configuration says.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, expect

from pbx import runtime
from web.bench.browser_handoff import CHROMIUM, one_browser_handoff
from web.bench.handoff import print_result, summary
from web.bench.softphone_rig import (
    Desk,
    agent_browser,
    build_softphone_bundle,
    chromium_with_agent_voice,
    desk,
    on_duty_with_phone,
    webrtc_pbx,
)

# A run that cannot put callers through any more is over: after this many handoffs
# in a row that raised, the soak stops and says so rather than spin to its end.
MAX_ERRORS_IN_A_ROW = 3

# Watches the tab's current line (once per JsSIP session: a re-opened line is a new
# one): the Session-Expires its INVITE carried, whether JsSIP runs a session timer on
# it, and the re-INVITEs and UPDATEs that reach it (a refresh is one or the other).
WATCH_LINE_JS = """() => {
  const phone = window.switchboardPhone;
  const soak = window.switchboardSoak = window.switchboardSoak || {lines: [], refreshes: 0};
  const session = phone.session;
  if (!session || !session.isLine || session.soakWatched) return soak;
  session.soakWatched = true;
  const request = session._request;
  const timers = session._sessionTimers || {};
  soak.lines.push({
    session_expires: (request && request.getHeader && request.getHeader("Session-Expires"))
      || null,
    timer_running: Boolean(timers.running),
  });
  session.on("reinvite", () => { soak.refreshes += 1; });
  session.on("update", () => { soak.refreshes += 1; });
  return soak;
}"""


async def watch_line(page: Page) -> dict[str, Any]:
    return dict(await page.evaluate(WATCH_LINE_JS))


async def soak(product: Desk, page: Page, minutes: float, every_s: float) -> dict[str, Any]:
    """Handoffs to Alice's open line every `every_s` for `minutes`; Alice is on duty."""
    alice = product.people["alice"].id
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    in_a_row = 0
    legs: set[str] = set()
    started = time.monotonic()
    ends = started + minutes * 60
    turn = 0
    while time.monotonic() < ends and in_a_row < MAX_ERRORS_IN_A_ROW:
        await watch_line(page)
        line = product.control.lines.of(alice)
        if line is not None:
            legs.add(line.leg)
        try:
            results.append(await one_browser_handoff(page, product))
            in_a_row = 0
        except (TimeoutError, AssertionError, PlaywrightError) as exc:
            # A handoff that never connected (no card, no voice): counted, and the run
            # goes on with the next caller.
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            in_a_row += 1
        turn += 1
        # Paced from the start, so a slow handoff does not stretch the run.
        await asyncio.sleep(max(0.0, min(started + turn * every_s, ends) - time.monotonic()))
    seen = await watch_line(page)
    invites = int(await page.evaluate("window.switchboardPhone.invites"))
    line = product.control.lines.of(alice)
    return report(results, errors, seen, invites, legs | ({line.leg} if line else set()),
                  minutes=minutes, every_s=every_s,
                  held_s=time.monotonic() - started,
                  line_at_end=None if line is None else line.state.value,
                  stopped_early=in_a_row >= MAX_ERRORS_IN_A_ROW)


def report(results: list[dict[str, Any]], errors: list[str], seen: dict[str, Any],
           invites: int, legs: set[str], *, minutes: float, every_s: float, held_s: float,
           line_at_end: str | None, stopped_early: bool) -> dict[str, Any]:
    """The soak's figures from its handoffs (one_browser_handoff's results) and what the
    tab saw of its line."""
    lines = list(seen.get("lines", []))
    return {
        "soak_minutes": minutes,
        "every_s": every_s,
        "held_s": round(held_s, 1),
        "handoffs": len(results) + len(errors),
        "handoffs_done": sum(1 for r in results
                             if not r["failed"] and not r["dropped"]
                             and r["connect_ms"] is not None),
        "dropped_calls": sum(1 for r in results if r["dropped"]),
        "failed_handoffs": sum(1 for r in results if r["failed"] or r["connect_ms"] is None)
        + len(errors),
        "errors": errors,
        "stopped_early": stopped_early,
        "connect_ms": summary([r["connect_ms"] for r in results if r["connect_ms"] is not None]),
        "caller_gap_ms": summary([r["caller_gap_ms"] for r in results
                                  if "caller_gap_ms" in r]),
        # The line opened once for the whole run unless something ended it.
        "line_reopens": {"invites_at_the_tab_after_the_first": max(0, invites - 1),
                         "line_legs_held": len(legs)},
        "line_at_end": line_at_end,
        "session_refreshes": {
            "session_expires_in_the_line_invite": [line["session_expires"] for line in lines],
            "jssip_session_timer_running": [line["timer_running"] for line in lines],
            "reinvites_or_updates_at_the_tab": int(seen.get("refreshes", 0)),
        },
    }


async def run(minutes: float, every_s: float, state_dir: Path) -> dict[str, Any]:
    await asyncio.to_thread(build_softphone_bundle)
    installation = await asyncio.to_thread(runtime.locate)
    async with (
        webrtc_pbx(installation, state_dir) as telephony,
        chromium_with_agent_voice(CHROMIUM, state_dir) as browser,
        desk(telephony, state_dir, open_line=True, world_apart=True) as product,
        agent_browser(browser) as context,
    ):
        page = await context.new_page()
        await on_duty_with_phone(page, product.origin, "alice")
        await expect(page.locator("#line-status")).to_have_attribute("data-line", "open")
        figures = await soak(product, page, minutes, every_s)
        await page.uncheck("#duty")  # the line is hung up before the desk goes
    return {
        "benchmark": "handoff soak",
        "agent": "browser softphone (Chromium, JsSIP over WebSocket, WebRTC), open line",
        "asterisk": installation.version,
        **figures,
    }


def main(minutes: float, every_s: float, as_json: bool) -> int:
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium (or run make setup)")
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-soak-") as tmp:
        print_result(asyncio.run(run(minutes, every_s, Path(tmp))), as_json)
    return 0
