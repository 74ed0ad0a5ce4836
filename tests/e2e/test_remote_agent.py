"""An agent on another machine, as in every call centre: Chromium in a network namespace
of its own (10.77.0.2, not loopback) trusts the installation's private CA, signs in to
`switchboard run` over HTTPS, registers its softphone over WSS with the PBX, takes a
live call the AI hands over, and both sides hear each other's tone. The audit log and
the login throttle know the agent by that machine's address.

The product is configured as the README's "Agents on other machines" says: a
certificate from a private CA (the README's openssl commands, tests/certificates.py)
for the host's address on the agents' network, the dashboard listening there.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect
from sqlalchemy import select

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import HandoffState
from handoff.store import Store, create_store_engine
from handoff.store.models import AuditEvent, Call, Handoff
from tests.agent_machine import AgentMachine, agent_machine, trust_ca
from tests.certificates import private_ca
from tests.dashboard_fixtures import Browser, free_port
from tests.product_run import Product, stopped_after
from tests.waiting import until
from web.bench.audio import CALLER_HZ
from web.bench.softphone_rig import (
    agent_browser,
    agent_tone_wav,
    build_softphone_bundle,
    chromium_args,
    on_duty_with_phone,
)
from web.bench.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# The peak frequency of what the browser plays must be the caller's tone, within the
# analyser's resolution (48 kHz / 8192 points: about 6 Hz a bin).
TONE_TOLERANCE_HZ = 15.0

# Listens to the softphone's remote audio for a moment: the loudest frequency in it.
PEAK_HZ = """async () => {
  const stream = window.switchboardPhone.remoteAudio.srcObject;
  if (!stream) return null;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  context.createMediaStreamSource(stream).connect(analyser);
  await new Promise((done) => setTimeout(done, 300));
  const bins = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(bins);
  let loudest = 1;
  for (let i = 1; i < bins.length; i++) if (bins[i] > bins[loudest]) loudest = i;
  const hz = loudest * context.sampleRate / analyser.fftSize;
  await context.close();
  return bins[loudest] > -90 ? hz : null;
}"""


@pytest.fixture
def machine() -> Iterator[AgentMachine]:
    with agent_machine() as made:
        yield made


@pytest.fixture
async def remote_product(machine: AgentMachine, tmp_path: Path) -> AsyncIterator[Product]:
    certificates = private_ca(tmp_path / "ca", machine.host_address)
    running = Product(
        tmp_path / "data", free_port(), host=machine.host_address, ca=certificates.ca,
        settings=[f"server.tls_cert={certificates.cert}",
                  f"server.tls_key={certificates.key}",
                  # The host's address on the agents' network, as a LAN installation has.
                  f"asterisk.media_address={machine.host_address}"],
    )
    async with stopped_after(running):
        yield running


async def audit_addresses(store: Store, action: str) -> list[str]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(AuditEvent.detail).where(
            AuditEvent.action == action).order_by(AuditEvent.id))
        return [row.detail.get("address", "") for row in rows]


async def caller_tone_heard(page: Page) -> bool:
    hz = await page.evaluate(PEAK_HZ)
    return hz is not None and abs(float(hz) - CALLER_HZ) < TONE_TOLERANCE_HZ


async def test_an_agent_on_another_machine_signs_in_over_https_and_takes_a_call_over_wss(
    machine: AgentMachine, remote_product: Product, chromium_path: Path, tmp_path: Path,
) -> None:
    product = remote_product
    build_softphone_bundle()
    await product.start()
    password = await product.new_password("ada")
    engine = create_store_engine(f"sqlite:///{product.data / 'switchboard.db'}")
    store = Store(engine)
    carrier = product.state()["carrier_instance"]
    assert isinstance(carrier, dict)
    spec = carrier["spec"]
    world = World(f"http://127.0.0.1:{spec['ports']['http']}/ari",
                  (spec["ari_user"], spec["ari_password"]))
    await world.start()
    home = tmp_path / "agent-home"
    home.mkdir()
    trust_ca(home, product.ca or Path())
    wav = agent_tone_wav(tmp_path / "agent-voice.wav")
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(machine.chromium(chromium_path, home)),
                args=chromium_args(wav), headless=True)
            try:
                async with agent_browser(browser) as context:
                    page = await context.new_page()
                    # Trusted without any exception: the CA is in the machine's store.
                    desk = await page.goto(f"{product.url}/login")
                    assert desk is not None and desk.ok
                    async with page.expect_response(
                            lambda r: r.url == f"{product.url}/" and r.ok) as desk_page:
                        await on_duty_with_phone(page, product.url, "ada", password)
                    # The page's policy lets the softphone reach the PBX over wss only.
                    policy = (await desk_page.value).headers["content-security-policy"]
                    assert f"wss://{machine.host_address}:" in policy
                    assert "ws://" not in policy.replace("wss://", "")

                    await take_a_call_with_two_way_audio(page, world, store,
                                                         machine.host_address)

                async with agent_browser(browser) as context:
                    await throttled_by_the_agents_address(await context.new_page(), product)
            finally:
                await browser.close()
        # The audit log names each sign-in's own machine: the agent's, then the
        # colleague's on the host's side of the link.
        assert await audit_addresses(store, "login") == [machine.address,
                                                         machine.host_address]
        assert await audit_addresses(store, "login_failed") == [machine.address] * 5
    finally:
        await world.close()
        await engine.dispose()


async def take_a_call_with_two_way_audio(page: Page, world: World, store: Store,
                                         media_address: str) -> None:
    """A caller asks the receptionist for a person (0); Ada accepts; the caller hears
    her microphone's tone and her browser plays the caller's tone; she ends the call."""
    caller = await world.place_call("2000")

    async def with_ai() -> Call | None:
        async with store.transaction() as tx:
            rows = [c for c in await tx.calls.open_calls() if c.caller_number == caller]
        return rows[0] if rows and rows[0].state is CallState.WITH_AI else None

    call = await until(with_ai, 30)

    async def greeted() -> bool:
        async with store.transaction() as tx:
            return bool(await tx.transcripts.for_call(call.id))

    await until(greeted, 30)
    await world.ari.channels.send_dtmf(world._outbound[caller], "0")

    async def offered() -> Handoff | None:
        async with store.transaction() as tx:
            handoffs = list(await tx.handoffs.for_call(call.id))
        return handoffs[0] if handoffs else None

    handoff = await until(offered)
    card = page.locator(f'li.card[data-handoff-id="{handoff.id}"]')
    clicked = time.monotonic()
    await card.get_by_role("button", name="Accept").click()
    await expect(page.locator("#call")).to_be_visible()

    # The caller hears the agent's tone, sent by Chromium on the other machine...
    async def agent_heard() -> float | None:
        return await world.first_heard(caller, "agent", clicked)

    await until(agent_heard, 20, why="the caller never heard the agent's tone")
    # ... and the agent's browser plays the caller's tone.
    await until(lambda: caller_tone_heard(page), 20,
                why="the agent's browser never played the caller's tone")

    async def connected() -> bool:
        async with store.transaction() as tx:
            row = await tx.handoffs.get(handoff.id)
        return row.state is HandoffState.CONNECTED

    await until(connected)
    # What the PBX told the browser: media at asterisk.media_address, and nowhere else.
    sdp = await page.evaluate(
        "window.switchboardPhone.session.connection.remoteDescription.sdp")
    assert re.findall(r"^c=IN IP4 (\S+)", sdp, re.MULTILINE) == [media_address]
    candidates = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", sdp, re.MULTILINE)
    assert candidates and set(candidates) == {media_address}
    await page.click("#call-end")
    await expect(page.locator("#call")).to_be_hidden()

    async def ended() -> Call | None:
        async with store.transaction() as tx:
            row = await tx.calls.get(call.id)
        return row if row.outcome is not None else None

    assert (await until(ended)).outcome is CallOutcome.COMPLETED_BY_AGENT


async def throttled_by_the_agents_address(page: Page, product: Product) -> None:
    """Five wrong passwords for grace from the agent's machine block grace's sign-in from
    that machine (the right password too); grace signing in from elsewhere is not
    blocked: the throttle keys on the login and the address behind the proxy, not on
    the login alone, which would let anyone lock a colleague out."""
    password = await product.new_password("grace")
    for _ in range(5):
        await page.goto(f"{product.url}/login")
        await page.fill("#login", "grace")
        await page.fill("#password", "guess")
        await page.click("button[type=submit]")
        await expect(page.locator("body")).to_contain_text("Wrong login or password")
    await page.goto(f"{product.url}/login")
    await page.fill("#login", "grace")
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await expect(page.locator("body")).to_contain_text("Too many failed sign-ins")

    # From the host's own side of the link: another address, not blocked.
    colleague = Browser(product.url, verify=product.client_ssl())
    try:
        assert (await colleague.login("grace", password)).status == 303
    finally:
        await colleague.close()
