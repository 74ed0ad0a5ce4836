"""The agent desk with its real softphone: Chromium + JsSIP registered to a real Asterisk.

One PBX and one carrier per module; the PBX knows the agents as WebRTC endpoints. Each
test gets a fresh store, the product's CallControl and the real dashboard wired to it,
so the browser talks to the same code a deployment runs: Accept dials the browser, the
page's End call hangs up the caller, a closed tab is an agent vanishing mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from handoff.agents import AgentRole, EndpointKind
from handoff.assistants import EngineKind
from handoff.controller import build_controller
from handoff.events import EventHub
from handoff.live import CallControl, Timing, call_key
from handoff.live.timeline import AcceptTimelines
from handoff.store import Store, create_store_engine, upgrade_to_head
from handoff.store.models import Agent
from pbx import runtime
from pbx.ari import AriClient
from pbx.asterisk_config import InboundRoute, SipAgent
from pbx.runtime import AsteriskInstance
from pbx.trunk_config import SipTrunk
from web.bench.audio import AGENT_HZ
from web.bench.dashboard_site import PASSWORD, cheap_passwords, free_port
from web.bench.rig import carrier_outbound
from web.bench.world import World
from web.bench.world_process import RemoteWorld
from web.dashboard import DashboardOptions, setup_dashboard
from web.dashboard.routes import STATIC_DIR
from web.dashboard.tools import Tools, setup_tools
from web.dashboard.typedefs import DASHBOARD, SoftphoneSettings

# Installed with the static files it builds the bundle into (package data).
BUILD_VENDOR = STATIC_DIR / "build_vendor.sh"
# The agents of these tests: WebRTC softphones with SIP credentials the PBX knows.
AGENTS = {"alice": AgentRole.AGENT, "bob": AgentRole.AGENT, "sam": AgentRole.SUPERVISOR}
# An agent with a SIP desk phone the PBX knows but which never registers (unplugged).
DESK_PHONE_AGENTS = {"dora": AgentRole.AGENT}


def sip_user(login: str) -> str:
    return f"sb-{login}"


def sip_password(login: str) -> str:
    return f"sip-{login}-secret"


def build_softphone_bundle() -> None:
    """JsSIP bundled as `make setup` does it (idempotent: instant when already built)."""
    subprocess.run(["bash", str(BUILD_VENDOR)], check=True)


def agent_tone_wav(path: Path, seconds: float = 60.0, rate: int = 48000) -> Path:
    """The agent's "voice" for Chromium's fake microphone: the agent tone (1850 Hz).

    Chromium loops the file, so a minute of tone covers any test.
    """
    t = np.arange(int(rate * seconds)) / rate
    samples = (np.sin(2 * np.pi * AGENT_HZ * t) * 0.5 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def chromium_args(wav: Path) -> list[str]:
    return [
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        # Media stays on 127.0.0.1 (the PBX offers only loopback ICE candidates);
        # Chromium skips loopback interfaces for WebRTC unless told otherwise.
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
    ]


@dataclass
class Telephony:
    pbx: AsteriskInstance
    carrier: AsteriskInstance

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.pbx.spec.ports.http}/ws"


@contextlib.asynccontextmanager
async def webrtc_pbx(
    installation: runtime.Installation, state_dir: Path, rtp_timeout: int = 30,
) -> AsyncIterator[Telephony]:
    tag = f"sp{os.getpid()}"
    pbx_ports = runtime.allocate_ports(runtime.PortRequest())
    taken = frozenset({pbx_ports.http, pbx_ports.sip, pbx_ports.ami, pbx_ports.rtp_start})
    carrier_ports = runtime.allocate_ports(runtime.PortRequest(), avoid=taken)
    pbx = runtime.new_instance(
        installation, f"{tag}-pbx", state_dir, ports=pbx_ports,
        trunks=(SipTrunk("carrier", "127.0.0.1", carrier_ports.sip),),
        routes=(InboundRoute("2000", "receptionist"),),
        agents=(
            *(SipAgent(sip_user(login), sip_password(login), "webrtc", login.title())
              for login in AGENTS),
            *(SipAgent(sip_user(login), sip_password(login), "deskphone", login.title())
              for login in DESK_PHONE_AGENTS),
        ),
        rtp_timeout=rtp_timeout,
        # Measured on Asterisk 22: it never offers a loopback ICE host candidate (the
        # interface scan skips lo), so restricting ICE to 127.0.0.1 leaves a browser
        # with no candidate at all. The host's own addresses are used; the packets
        # still never leave the machine.
        ice_permit=(),
    )
    carrier = runtime.new_instance(
        installation, f"{tag}-carrier", state_dir, ports=carrier_ports, app="carrier",
        trunks=(SipTrunk("switchboard", "127.0.0.1", pbx_ports.sip),),
        # A customer's line the agents call back: answered at once, speaking.
        routes=(InboundRoute("_5XXX", "fallback"),),
    )
    await pbx.start()
    try:
        await carrier.start()
        try:
            yield Telephony(pbx, carrier)
        finally:
            await carrier.stop()
    finally:
        await pbx.stop()


@dataclass
class Desk:
    """The product for one test: store, call control, dashboard; and the caller's world."""

    origin: str
    store: Store
    control: CallControl
    world: World | RemoteWorld
    people: dict[str, Agent]
    # The dashboard's record of where each Accept's time went (handoff.live.timeline).
    timelines: AcceptTimelines

    async def place_call(self, timeout: float = 10) -> tuple[str, str]:
        """A caller on the line with the AI: (caller number, call id)."""
        caller = await self.world.place_call("2000")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for live in self.control.calls.values():
                if live.ai and live.caller_number == caller:
                    return caller, live.call_id
            await asyncio.sleep(0.02)
        raise TimeoutError(f"the call from {caller} never reached the AI")

    async def heard(self, caller: str, who: str, after: float, timeout: float = 10, *,
                    in_mix: bool = False) -> float:
        """When the caller first heard ``who`` since ``after``: in a frame that is mostly
        ``who``'s, or with ``in_mix`` in any frame that holds ``who``'s voice."""
        first = self.world.first_heard_in_mix if in_mix else self.world.first_heard
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = await first(caller, who, after)
            if at is not None:
                return at
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the caller never heard {who} after {after:.3f}")

    async def count_heard(self, caller: str, who: str, start: float, end: float) -> int:
        return sum(1 for _, label in await self.world.frames(caller, start, end) if label == who)


@contextlib.asynccontextmanager
async def desk(telephony: Telephony, folder: Path, *, open_line: bool = False,
               world_apart: bool = False) -> AsyncIterator[Desk]:
    """The product on `telephony` with a fresh store. `open_line`: browser agents keep an
    open line (the product's default); off, every Accept rings the browser, the path
    the tests of ringing, the benchmark's ``--line ring`` and desk phones take.
    `world_apart`: the caller's side (phones, probes, the AI engine) runs in a child
    process, as the benchmarks want it: its audio work at 50 frames a second per party
    must not queue in front of the controller being timed, which in production has its
    own process too."""
    engine = create_store_engine(f"sqlite:///{folder}/desk.db")
    await upgrade_to_head(engine)
    store = Store(engine)
    passwords = cheap_passwords()
    hashed = passwords.hash(PASSWORD)
    async with store.transaction() as tx:
        people = {
            login: await tx.agents.create(
                login=login, display_name=login.title(), role=role, password_hash=hashed,
                sip_user=sip_user(login), sip_password=sip_password(login),
                endpoint_kind=kind,
            )
            for kind, agents in ((EndpointKind.WEBRTC, AGENTS),
                                 (EndpointKind.DESKPHONE, DESK_PHONE_AGENTS))
            for login, role in agents.items()
        }
    world: World | RemoteWorld
    if world_apart:
        world = await RemoteWorld.start(telephony.carrier.ari_url, *telephony.carrier.ari_auth)
        engine_address = world.engine_address
    else:
        world = World(telephony.carrier.ari_url, telephony.carrier.ari_auth)
        engine_address = await world.start()
    async with store.transaction() as tx:
        await tx.assistants.create(
            name="receptionist", numbers=["2000"], engine=EngineKind.AUDIOSOCKET,
            engine_address=engine_address,
            control_token_hash=hashlib.sha256(b"softphone-e2e").hexdigest(),
        )
    hub = EventHub()
    ari = AriClient(telephony.pbx.ari_url, *telephony.pbx.ari_auth, apps="switchboard",
                    key=call_key)
    # Recordings are kept as the product keeps them: out of Asterisk's spool, into the
    # folder the recording pages serve.
    recordings = folder / "recordings"
    recordings.mkdir(exist_ok=True)
    live = build_controller(ari, store, hub, outbound=carrier_outbound(store), timing=Timing(),
                            callback_ring_timeout_s=10, recordings=recordings,
                            spool=telephony.pbx.spool(), open_lines=open_line)
    control, callbacks, supervision = live.control, live.callbacks, live.supervision
    await ari.start()
    await ari.wait_ready(10)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    app = web.Application()
    setup_dashboard(
        app, store=store, hub=hub, commands=control, origin=origin, secure_cookies=False,
        options=DashboardOptions(passwords=passwords),
        softphone=SoftphoneSettings(lambda: telephony.websocket_url),
    )
    setup_tools(app, Tools(callbacks=lambda: callbacks, supervision=lambda: supervision,
                           recordings=recordings))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Desk(origin, store, control, world, people, app[DASHBOARD].timelines)
    finally:
        await world.close()  # hangs up any caller a failed test left on the line
        await asyncio.sleep(0.5)
        await runner.cleanup()
        await live.close()
        await ari.close()
        await engine.dispose()


@contextlib.asynccontextmanager
async def chromium_with_agent_voice(chromium: Path, folder: Path) -> AsyncIterator[Browser]:
    wav = agent_tone_wav(folder / "agent-voice.wav")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=chromium_args(wav), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def agent_browser(browser: Browser, **options: Any) -> AsyncIterator[BrowserContext]:
    """One agent's own browser profile: the microphone allowed, and 15 s for each step (a
    phone registering or a call arriving takes seconds on a loaded machine)."""
    context = await browser.new_context(permissions=["microphone"], **options)
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        with contextlib.suppress(Exception):  # a failed test may have lost the browser
            await context.close()


async def sign_in(page: Page, origin: str, login: str, password: str = PASSWORD, *,
                  path: str = "/") -> None:
    """Sign in at `path` (the desk, /admin, /supervisor...): the login page sends the
    browser back there, and the page is live (its socket has its snapshot)."""
    await page.goto(f"{origin}{path}")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{origin}{path}")
    await expect(page.locator("body")).to_have_attribute("data-live", "yes")


async def sign_in_with_phone(page: Page, origin: str, login: str,
                             password: str = PASSWORD) -> None:
    """Sign in and wait until the softphone is registered with the PBX."""
    await sign_in(page, origin, login, password)
    await expect(page.locator("#phone-status")).to_have_attribute(
        "data-state", "registered", timeout=15_000)


async def on_duty_with_phone(page: Page, origin: str, login: str,
                             password: str = PASSWORD) -> None:
    """Signed in, the softphone registered, and on duty: cards reach this desk."""
    await sign_in_with_phone(page, origin, login, password)
    await page.check("#duty")
    await expect(page.locator("body")).to_have_attribute("data-on-duty", "yes")
