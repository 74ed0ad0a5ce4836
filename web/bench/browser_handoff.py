"""`switchboard bench handoff --agent browser`: Accept click to the caller hearing the agent.

The agent is the real thing: Debian's Chromium (driven by Playwright) signed in to the
dashboard, its JsSIP softphone registered to the PBX over WebSocket, a fake microphone
playing the agent's tone. For each of N calls the caller reaches the AI, the AI asks for
a person, the card shows, the benchmark clicks Accept and times how long until the
caller's side receives the agent's tone. The agent then clicks End call.

``--line`` picks how the agent is put through: ``open`` (the agent's open line, parked
between calls, waits muted in the offered call's bridge and Accept unmutes it:
handoff.live.lines), ``ring`` (Accept rings
the softphone, a new WebRTC call each time) or ``both``, one after the other in one run
on the same PBX and browser, each with its own figures.

``connect_ms`` runs from the click as the page received it (the softphone stamps it with
the wall clock) to the caller hearing the agent: the first frame that holds the agent's
tone, alone or mixed with the AI's last words (an open line joins while the AI is still
in the bridge, for one mixing tick); ``agent_alone_ms`` to the first frame that is mostly
the agent's; ``agent_hears_ms`` the other way, from
the click to the caller's audio reaching the page's player (WebRTC's inbound audio
energy rising); ``caller_gap_ms`` is the longest silence the caller hears across the
move, as `switchboard bench handoff` counts it. Playwright's own pre-click checks are
reported apart (``click_dispatch_ms``). Besides, it reports where the time
went, from the softphone's own marks (``window.switchboardPhone.marks``, ms after the
click): the INVITE's arrival, the microphone, the 200 OK sent, ICE and DTLS done (none
of which happens at an Accept on an open line).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from handoff.calls import CallState
from handoff.handoffs import HandoffState
from handoff.live.timeline import STAGES
from pbx import runtime
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

CHROMIUM = Path(os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium"))
STEPS = ("accept_replied", "invite", "microphone", "first_candidate", "answer_sent", "ack",
         "ice_connected", "dtls_connected", "first_packet_sent")


# Polls the page's WebRTC statistics from the click until the caller's audio arrives:
# returns the wall-clock time (ms) its inbound energy first rose, or null. An open line
# has been receiving silence; a rung call starts from nothing.
AGENT_HEARS_JS = """async (timeoutMs) => {
  const phone = window.switchboardPhone;
  const energy = async () => {
    const pc = phone.session && phone.session.connection;
    if (!pc) return null;
    let total = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") total = s.totalAudioEnergy || 0;
    });
    return total;
  };
  const started = performance.now();
  const before = (await energy()) || 0;
  while (performance.now() - started < timeoutMs) {
    const now = await energy();
    if (now !== null && now > before + 1e-4) return performance.timeOrigin + performance.now();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return null;
}"""


async def one_browser_handoff(page: Page, product: Desk) -> dict[str, Any]:
    caller, call_id = await product.place_call()
    await product.heard(caller, "ai", 0.0)
    handoff_id = await product.control.request_handoff(
        call_id, reason="caller_asked", summary="benchmark")
    card = page.locator(f'li.card[data-handoff-id="{handoff_id}"]')
    accept = card.get_by_role("button", name="Accept")
    await expect(accept).to_be_enabled()
    result: dict[str, Any] = {"call_id": call_id}
    hears = asyncio.ensure_future(page.evaluate(AGENT_HEARS_JS, 15_000))
    before_click = time.monotonic()
    await accept.click()
    heard: float | None
    try:
        heard = await product.heard(caller, "agent", before_click, timeout=15, in_mix=True)
        alone = await product.heard(caller, "agent", before_click, timeout=15)
    except TimeoutError:
        heard = alone = None
    agent_heard_wall_ms = await hears
    await expect(page.locator("#call")).to_be_visible()
    result["marks"] = await page.evaluate("window.switchboardPhone.marks")
    # From the click as the page saw it (Playwright spends tens of ms checking that the
    # button is visible and stable before it clicks: not the product's time). Both
    # clocks are this machine's wall clock; the probes stamp with the monotonic one.
    wall_minus_monotonic = time.time() - time.monotonic()
    clicked_wall_ms = float(result["marks"].pop("clicked_at_epoch_ms"))
    result["connect_ms"] = (None if heard is None
                            else (heard + wall_minus_monotonic) * 1000 - clicked_wall_ms)
    result["agent_alone_ms"] = (None if alone is None
                                else (alone + wall_minus_monotonic) * 1000 - clicked_wall_ms)
    result["click_dispatch_ms"] = clicked_wall_ms - (before_click + wall_minus_monotonic) * 1000
    result["agent_hears_ms"] = (None if agent_heard_wall_ms is None
                                else float(agent_heard_wall_ms) - clicked_wall_ms)
    # The server's own stamps along the Accept (same process, same monotonic clock).
    server = product.timelines.of(handoff_id) or {}
    result["server"] = {stage: (at + wall_minus_monotonic) * 1000 - clicked_wall_ms
                        for stage, at in server.items()}
    if heard is not None:
        await asyncio.sleep(0.5)  # the gap is counted to 0.4 s after the agent is heard
        clicked = clicked_wall_ms / 1000 - wall_minus_monotonic
        result["caller_gap_ms"] = await product.world.gap_ms(caller, clicked, heard + 0.4)
    # The handoff is connected once the AI has left (a moment after the agent's voice
    # reached Asterisk): a handoff still short of that after 5 s failed.
    deadline = time.monotonic() + 5
    while True:
        async with product.store.transaction() as tx:
            state = (await tx.handoffs.get(handoff_id)).state
            call_state = (await tx.calls.get(call_id)).state
        if state is HandoffState.CONNECTED or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    result["failed"] = state is not HandoffState.CONNECTED
    result["dropped"] = call_state is CallState.ENDED
    await page.click("#call-end")
    await expect(page.locator("#call")).to_be_hidden()
    deadline = time.monotonic() + 10
    while call_id in product.control.calls and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await product.world.forget(caller)
    return result


async def one_way(product: Desk, browser: Browser, line: str, calls: int
                  ) -> dict[str, Any]:
    """N handoffs to Alice's desk, put through one way (``open`` or ``ring``)."""
    async with agent_browser(browser) as context:
        page = await context.new_page()
        await on_duty_with_phone(page, product.origin, "alice")
        if line == "open":
            await expect(page.locator("#line-status")).to_have_attribute("data-line", "open")
        results = [await one_browser_handoff(page, product) for _ in range(calls)]
        invites = int(await page.evaluate("window.switchboardPhone.invites"))
        await page.uncheck("#duty")  # an open line is hung up before the desk goes
    connects = [r["connect_ms"] for r in results if r["connect_ms"] is not None]
    steps = {
        step: summary([float(r["marks"][step]) for r in results if step in r["marks"]])
        for step in STEPS
    }
    # The Accept's path end to end, each stage's p50 in ms after the click: the tab's
    # send, the server's stages (handoff.live.timeline), the tab's reply, the caller
    # hearing the agent. What lies between ari_answered and caller_hears is Asterisk's
    # (the bridge's mixing tick, the trunk, the caller's side).
    path = {"accept_sent": [float(r["marks"]["accept_sent"]) for r in results
                            if "accept_sent" in r["marks"]]}
    for stage in STAGES:
        path[stage] = [r["server"][stage] for r in results if stage in r["server"]]
    path["accept_replied"] = [float(r["marks"]["accept_replied"]) for r in results
                              if "accept_replied" in r["marks"]]
    path["caller_hears"] = connects
    return {
        "connect_ms": summary(connects),
        # From the ARI request's answer (an open line unmuted in the call's bridge, or
        # moved into it; a rung phone's dial asked) to the caller hearing the agent: an
        # open line's part that is not the product's (the agent's next frame, the
        # bridge's mixing tick, the trunk).
        "heard_after_move_ms": summary([
            r["connect_ms"] - r["server"]["ari_answered"] for r in results
            if r["connect_ms"] is not None and "ari_answered" in r["server"]]),
        # Until the agent's voice is most of what the caller hears: the AI's last
        # frames mixed with the agent's first count above, not here.
        "agent_alone_ms": summary([r["agent_alone_ms"] for r in results
                                   if r["agent_alone_ms"] is not None]),
        "agent_hears_ms": summary([r["agent_hears_ms"] for r in results
                                   if r["agent_hears_ms"] is not None]),
        "caller_gap_ms": summary([r["caller_gap_ms"] for r in results
                                  if "caller_gap_ms" in r]),
        "steps_ms_after_click": steps,
        "accept_path_p50_ms_after_click": {
            stage: summary(values)["p50"] for stage, values in path.items() if values},
        # Playwright's own checks before the click reached the page (not counted above).
        "click_dispatch_ms": summary([r["click_dispatch_ms"] for r in results]),
        # INVITEs that reached the tab: 1 for an open line's whole run, one per call rung.
        "invites_at_the_tab": invites,
        "dropped_calls": sum(1 for r in results if r["dropped"]),
        "failed_handoffs": sum(1 for r in results if r["failed"] or r["connect_ms"] is None),
    }


async def run(calls: int, state_dir: Path, line: str = "both") -> dict[str, Any]:
    await asyncio.to_thread(build_softphone_bundle)
    installation = await asyncio.to_thread(runtime.locate)
    ways = ("open", "ring") if line == "both" else (line,)
    figures: dict[str, Any] = {}
    async with (
        webrtc_pbx(installation, state_dir) as telephony,
        chromium_with_agent_voice(CHROMIUM, state_dir) as browser,
    ):
        for way in ways:
            folder = state_dir / way
            folder.mkdir()
            async with desk(telephony, folder, open_line=way == "open",
                            world_apart=True) as product:
                figures[way] = await one_way(product, browser, way, calls)
    return {
        "benchmark": "handoff",
        "agent": "browser softphone (Chromium, JsSIP over WebSocket, WebRTC)",
        "calls": calls,
        "asterisk": installation.version,
        **({"line": figures} if line == "both" else {"line_kind": line, **figures[line]}),
    }


def main(calls: int, as_json: bool, line: str = "both") -> int:
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium (or run make setup)")
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-browser-") as tmp:
        print_result(asyncio.run(run(calls, Path(tmp), line)), as_json)
    return 0
