"""An agent on another machine, as in every call centre: Chromium in a network namespace
of its own (10.77.0.2, not loopback) trusts the installation's private CA, signs in to
`switchboard run` over HTTPS, registers its softphone over WSS with the PBX, takes a
live call the AI hands over, and both sides hear each other's tone. The audit log and
the login throttle know the agent by that machine's address. Then that machine's network
fails piece by piece (R10, through tests/faults.LinkFaults on its link): its media lost
for a moment, lost for good, and its SIP WebSocket cut while the media flows.

The product is configured as the README's "Agents on other machines" says: a
certificate from a private CA (the README's openssl commands, tests/certificates.py)
for the host's address on the agents' network, the dashboard listening there. One
product, machine and Chromium serve the module's tests.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import Page, async_playwright, expect
from sqlalchemy import select

from handoff.calls import CallOutcome, CallState
from handoff.handoffs import FailureReason, HandoffState
from handoff.store import Store, create_store_engine
from handoff.store.models import AuditEvent, Call, Handoff
from pbx.ari import AriError, basic_auth_header
from tests.agent_machine import AgentMachine, agent_machine, trust_ca
from tests.certificates import private_ca
from tests.dashboard_fixtures import Browser, free_port
from tests.faults import LinkFaults, Traffic
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

# Listens to the softphone's remote audio for a moment: the loudest frequency in it and
# its level, with what the connection says it received (for a failure's message).
PEAK_HZ = """async () => {
  const phone = window.switchboardPhone;
  const stream = phone.remoteAudio.srcObject;
  const pc = phone.session && phone.session.connection;
  let inbound = {};
  if (pc) (await pc.getStats()).forEach((e) => {
    if (e.type === "inbound-rtp" && e.kind === "audio") inbound = e;
  });
  const seen = { hz: null, db: null, received: inbound.packetsReceived,
                 level: inbound.audioLevel, energy: inbound.totalAudioEnergy,
                 concealed: inbound.concealedSamples, samples: inbound.totalSamplesReceived,
                 codec: inbound.codecId, paused: phone.remoteAudio.paused,
                 tracks: stream ? stream.getAudioTracks().map((t) => t.readyState) : [] };
  if (!stream) return seen;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  context.createMediaStreamSource(stream).connect(analyser);
  await new Promise((done) => setTimeout(done, 300));
  const bins = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(bins);
  let loudest = 1;
  for (let i = 1; i < bins.length; i++) if (bins[i] > bins[loudest]) loudest = i;
  seen.hz = loudest * context.sampleRate / analyser.fftSize;
  seen.db = bins[loudest];
  await context.close();
  return seen;
}"""


@pytest.fixture(scope="module")
def machine() -> Iterator[AgentMachine]:
    with agent_machine() as made:
        yield made


@pytest.fixture(scope="module")
async def remote_product(machine: AgentMachine, tmp_path_factory: pytest.TempPathFactory
                         ) -> AsyncIterator[Product]:
    """`switchboard run` for the agent's machine, started once for this module's tests."""
    folder = tmp_path_factory.mktemp("remote")
    certificates = private_ca(folder / "ca", machine.host_address)
    running = Product(
        folder / "data", free_port(), host=machine.host_address, ca=certificates.ca,
        settings=[f"server.tls_cert={certificates.cert}",
                  f"server.tls_key={certificates.key}",
                  # The host's address on the agents' network, as a LAN installation has.
                  f"asterisk.media_address={machine.host_address}"],
    )
    build_softphone_bundle()
    async with stopped_after(running):
        await running.start()
        yield running


@pytest.fixture(scope="module")
async def ledger(remote_product: Product) -> AsyncIterator[Store]:
    engine = create_store_engine(f"sqlite:///{remote_product.data / 'switchboard.db'}")
    try:
        yield Store(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def callers(remote_product: Product) -> AsyncIterator[World]:
    """Callers from the product's demo carrier, each hearing who speaks to them."""
    carrier = remote_product.state()["carrier_instance"]
    assert isinstance(carrier, dict)
    spec = carrier["spec"]
    world = World(f"http://127.0.0.1:{spec['ports']['http']}/ari",
                  (spec["ari_user"], spec["ari_password"]))
    await world.start()
    try:
        yield world
    finally:
        await world.close()


@pytest.fixture(scope="module")
async def agents_chromium(machine: AgentMachine, remote_product: Product, chromium_path: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chromium]:
    """Chromium on the agent's machine, trusting the installation's CA."""
    home = tmp_path_factory.mktemp("agent-home")
    trust_ca(home, remote_product.ca or Path())
    wav = agent_tone_wav(home / "agent-voice.wav")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(machine.chromium(chromium_path, home)),
            args=chromium_args(wav), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def audit_addresses(store: Store, action: str) -> list[str]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(AuditEvent.detail).where(
            AuditEvent.action == action).order_by(AuditEvent.id))
        return [row.detail.get("address", "") for row in rows]


# What the agent's browser played when last listened to, for a failure's message.
last_played: dict[str, Any] = {}


async def caller_tone_heard(page: Page) -> bool:
    seen = await page.evaluate(PEAK_HZ)
    last_played.clear()
    last_played.update(seen)
    return (seen["hz"] is not None and seen["db"] > -90
            and abs(float(seen["hz"]) - CALLER_HZ) < TONE_TOLERANCE_HZ)


def not_played(what: str) -> Callable[[], str]:
    return lambda: f"{what} (it last played {last_played})"


async def test_an_agent_on_another_machine_signs_in_over_https_and_takes_a_call_over_wss(
    machine: AgentMachine, remote_product: Product, ledger: Store, callers: World,
    agents_chromium: Chromium,
) -> None:
    product, store = remote_product, ledger
    password = await product.new_password("ada")
    async with agent_browser(agents_chromium) as context:
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

        await take_a_call_with_two_way_audio(page, callers, store, machine.host_address)
        await page.uncheck("#duty")  # her shift is over; her line is hung up
        await expect(page.locator("body")).to_have_attribute("data-on-duty", "no")

    async with agent_browser(agents_chromium) as context:
        await throttled_by_the_agents_address(await context.new_page(), product)
    # The audit log names each sign-in's own machine: the agent's, then the
    # colleague's on the host's side of the link.
    assert await audit_addresses(store, "login") == [machine.address,
                                                     machine.host_address]
    assert await audit_addresses(store, "login_failed") == [machine.address] * 5


async def take_a_call_with_two_way_audio(page: Page, world: World, store: Store,
                                         media_address: str) -> None:
    """A caller asks the receptionist for a person (0); Ada accepts; the caller hears
    her microphone's tone and her browser plays the caller's tone; she ends the call."""
    _, call, _ = await a_caller_taken(page, world, store)
    # What the PBX told the browser: media at asterisk.media_address, and nowhere else.
    sdp = await page.evaluate(
        "window.switchboardPhone.session.connection.remoteDescription.sdp")
    assert re.findall(r"^c=IN IP4 (\S+)", sdp, re.MULTILINE) == [media_address]
    candidates = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", sdp, re.MULTILINE)
    assert candidates and set(candidates) == {media_address}
    await page.click("#call-end")
    await expect(page.locator("#call")).to_be_hidden()
    assert (await until(lambda: ended(store, call.id))).outcome is (
        CallOutcome.COMPLETED_BY_AGENT)


async def a_caller_taken(page: Page, world: World, store: Store) -> tuple[str, Call, Handoff]:
    """A caller asks the receptionist for a person (0); the desk accepts the card; both
    hear each other: (caller, call, handoff)."""
    placed = time.monotonic()
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
    # Heard, not only written down: a caller presses once they hear the AI. Within
    # 20 s, so that a failure reads the carrier's leg before the PBX's 30 s RTP timeout
    # has hung a silent caller up.
    try:
        await until(lambda: ai_speaks(world, caller, placed), 20,
                    why=lambda: f"the caller never heard the receptionist (what reached "
                                f"them: {heard_since(world, caller, placed)})")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {await carrier_leg(world, caller)}") from exc
    await world.ari.channels.send_dtmf(world._outbound[caller], "0")
    attempts = await until(lambda: handoffs_of(store, call.id, 1))
    handoff = await accept_and_talk(page, world, store, caller, attempts[0])
    return caller, call, handoff


async def accept_and_talk(page: Page, world: World, store: Store, caller: str,
                          handoff: Handoff) -> Handoff:
    """Accept the card; the caller hears the agent's tone, sent by Chromium on the
    other machine, and the agent's browser plays the caller's; the handoff connects."""
    card = page.locator(f'li.card[data-handoff-id="{handoff.id}"]')
    clicked = time.monotonic()
    await card.get_by_role("button", name="Accept").click()
    await expect(page.locator("#call")).to_be_visible()
    await until(lambda: world.first_heard(caller, "agent", clicked), 20,
                why="the caller never heard the agent's tone")
    try:
        await until(lambda: caller_tone_heard(page), 20,
                    why=not_played("the agent's browser never played the caller's tone"))
    except AssertionError as exc:
        # Silence played with every packet received: the caller's audio is not in the
        # call's mix. Whether it left the caller's side (the rig's carrier) says whose.
        raise AssertionError(f"{exc}; {await carrier_leg(world, caller)}") from exc

    async def connected() -> Handoff | None:
        async with store.transaction() as tx:
            row = await tx.handoffs.get(handoff.id)
        return row if row.state is HandoffState.CONNECTED else None

    return await until(connected)


async def handoffs_of(store: Store, call_id: str, count: int) -> list[Handoff] | None:
    """The call's handoff attempts, once there are ``count`` of them."""
    async with store.transaction() as tx:
        attempts = list(await tx.handoffs.for_call(call_id))
    return attempts if len(attempts) >= count else None


async def line_answered_after(page: Page, invites: int) -> str | None:
    """Once the tab has answered a line call after its first ``invites`` INVITEs: the
    line's state on the desk at that moment."""
    shown = await page.evaluate("""(invites) => {
      const phone = window.switchboardPhone;
      const session = phone.session;
      if (phone.invites <= invites || !session || !session.isLine) return null;
      // Confirmed: the PBX's ACK came, the call is up as far as SIP goes.
      return session.status === session.C.STATUS_CONFIRMED ? document.body.dataset.line : null;
    }""", invites)
    return None if shown is None else str(shown)


async def ai_speaks(world: World, caller: str, after: float) -> bool:
    """The caller hears the receptionist again: half a second of voice since ``after``
    that is not the agent's tone (the built-in receptionist speaks, it sends no tone)."""
    frames = await world.frames(caller, after, time.monotonic())
    return sum(1 for _, who in frames if who not in ("-", "agent")) > 25


async def carrier_leg(world: World, caller: str) -> str:
    """The caller's leg on the carrier (the rig), for a failure's message: whether it is
    bridged with the caller's phone (its UnicastRTP leg there), the RTP it sent to and got
    from the PBX, and between which addresses."""
    leg = world._outbound[caller]
    try:
        stats = await world.ari.channels.rtp_statistics(leg)
        bridges = [b.get("channels") for b in await world.ari.bridges.list()
                   if leg in (b.get("channels") or [])]
        local = await world.ari.channels.get_variable(leg, "CHANNEL(rtp,src)")
        remote = await world.ari.channels.get_variable(leg, "CHANNEL(rtp,dest)")
    except AriError as exc:
        return f"the caller's carrier leg could not be read: {exc}"
    return (f"the caller's carrier leg is bridged with {bridges}, sent the PBX "
            f"{stats.get('txcount')} packets and got {stats.get('rxcount')} (RTP from "
            f"{local} to {remote})")


def heard_since(world: World, caller: str, since: float) -> dict[str, int]:
    """How many frames of each kind reached the caller since ``since`` ('-' silence,
    '~' a voice that is no party's tone), for a failure's message."""
    return dict(Counter(p.kind for p in world.probes[caller].received if p.at >= since))


async def ended(store: Store, call_id: str) -> Call | None:
    async with store.transaction() as tx:
        row = await tx.calls.get(call_id)
    return row if row.outcome is not None else None


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


# R10 on the agent's side, for a browser phone on its own machine. What decides is the
# PBX's media timeout for browser phones (webrtc_rtp_timeout, 5 s): a loss shorter than
# it is a blip the call rides through; a loss of 30 s or 120 s ends her leg at that
# timeout whatever its length, so the long loss is held only until it has (the timeout,
# not the length, is the case, as in tests/integration/test_media_loss.py).
BLIP_S = 2.5

# Every phone state the desk shows from now on, in order.
RECORD_PHONE_STATES = """() => {
  const status = document.getElementById("phone-status");
  window.phoneStatesShown = [];
  new MutationObserver(() => window.phoneStatesShown.push(status.dataset.state))
    .observe(status, { attributes: true, attributeFilter: ["data-state"] });
}"""


async def test_a_browser_agents_network_losing_media_then_its_sip_websocket(
    machine: AgentMachine, remote_product: Product, ledger: Store, callers: World,
    agents_chromium: Chromium,
) -> None:
    product, store, world = remote_product, ledger, callers
    pbx = product.state()["pbx_instance"]
    assert isinstance(pbx, dict)
    password = await product.new_password("ada")
    with LinkFaults(machine.namespace, machine.link) as link:
        async with agent_browser(agents_chromium) as context:
            page = await context.new_page()
            await on_duty_with_phone(page, product.url, "ada", password)
            line = page.locator("#line-status")
            await expect(line).to_have_attribute("data-line", "open")
            caller, call, first = await a_caller_taken(page, world, store)

            # A blip: every UDP packet of the browser lost for 2.5 s, both ways.
            with link.black_holed(Traffic.udp()):
                await asyncio.sleep(BLIP_S)  # the loss itself: its length is the case
            back = time.monotonic()
            await until(lambda: world.first_heard(caller, "agent", back), 10,
                        why="the caller never heard the agent again after the blip")
            await until(lambda: caller_tone_heard(page), 10,
                        why=not_played("the agent's browser never played the caller again"))
            assert [(h.id, h.state) for h in await handoffs_of(store, call.id, 1) or []] == [
                (first.id, HandoffState.CONNECTED)]  # nothing ended, nobody offered it
            await expect(line).to_have_attribute("data-line", "open")

            # Lost for good: the PBX ends her leg at its media timeout, and the tab
            # hears of it over its SIP WebSocket, which still works.
            invites = await page.evaluate("window.switchboardPhone.invites")
            with link.black_holed(Traffic.udp()) as lost:
                await until(lambda: ai_speaks(world, caller, lost), 20,
                            why="the caller was not given back to the AI")
                await expect(line).to_have_attribute("data-line", "down")
                attempts = await until(lambda: handoffs_of(store, call.id, 2), 10)
                # The tab asks for its line again and answers the PBX's call: the SIP
                # gets through, the media cannot. The desk still says the line is down
                # and shows no card, so she cannot take the caller into silence.
                shown = await until(lambda: line_answered_after(page, invites), 15,
                                    why="the tab never answered a new line")
                assert shown == "down"
                card = page.locator(f'li.card[data-handoff-id="{attempts[1].id}"]')
                assert not await card.is_visible()
            assert (attempts[0].state, attempts[0].failure_reason) == (
                HandoffState.FAILED, FailureReason.AGENT_VANISHED)
            again = attempts[1]
            assert (again.state, again.attempt) == (HandoffState.OFFERED, 2)
            # The network back, the tab opens its line again by itself, and the card
            # offered again is hers to take.
            await expect(line).to_have_attribute("data-line", "open", timeout=30_000)
            await accept_and_talk(page, world, store, caller, again)

            # Only the SIP WebSocket cut (reset at both ends, a new one refused), the
            # media flowing: the call goes on; the desk says the phone is reconnecting.
            config = await page.evaluate("window.switchboardPhone.config")
            port = urlsplit(config["websocket_url"]).port
            assert port is not None
            phone = page.locator("#phone-status")
            assert await endpoint_state(pbx, config["sip_user"]) == "online"
            await page.evaluate(RECORD_PHONE_STATES)
            with link.cut_off(Traffic.tcp(port)):
                await expect(phone).to_have_attribute("data-state", "reconnecting")
                # The PBX dropped her registration with the socket: nothing can
                # register again while the cut lasts.
                await until(lambda: endpoint_is(pbx, config["sip_user"], "offline"), 10,
                            why="the PBX kept a registration whose socket was reset")
                offline = time.monotonic()
                # The media never used that socket: the caller still hears her.
                await until(lambda: world.first_heard(caller, "agent", offline), 5)
            await expect(line).to_have_attribute("data-line", "open")
            # JsSIP connects again by itself and REGISTERs: the PBX has her contact again.
            await expect(phone).to_have_attribute("data-state", "registered", timeout=30_000)
            await until(lambda: endpoint_is(pbx, config["sip_user"], "online"), 10,
                        why="the REGISTER after the cut never reached the PBX")
            # Reconnecting all along, then ready: never an error nor "not registered"
            # (JsSIP drops its registration with the socket and says so).
            shown = await page.evaluate("window.phoneStatesShown")
            assert list(dict.fromkeys(shown)) == ["reconnecting", "registered"], shown
            after = time.monotonic()
            await until(lambda: world.first_heard(caller, "agent", after), 10)
            # The PBX's BYE for End reaches the tab over its new socket.
            await page.click("#call-end")
            await expect(page.locator("#call")).to_be_hidden()
            assert (await until(lambda: ended(store, call.id))).outcome is (
                CallOutcome.COMPLETED_BY_AGENT)
            await page.uncheck("#duty")
            # Off duty on the server before the tab closes, or she stays on duty with
            # no line, and a later test's caller finds nobody.
            await expect(page.locator("body")).to_have_attribute("data-on-duty", "no")


async def endpoint_state(pbx: dict[str, Any], sip_user: str) -> str:
    """What the PBX says of an agent's phone (ARI): online while it has a contact."""
    spec = pbx["spec"]
    credentials = (spec["ari_user"], spec["ari_password"])
    async with aiohttp.ClientSession(headers=basic_auth_header(*credentials)) as http, http.get(
            f"http://127.0.0.1:{spec['ports']['http']}/ari/endpoints/PJSIP/{sip_user}"
    ) as reply:
        assert reply.status == 200, await reply.text()
        return str((await reply.json())["state"])


async def endpoint_is(pbx: dict[str, Any], sip_user: str, state: str) -> bool:
    return await endpoint_state(pbx, sip_user) == state
