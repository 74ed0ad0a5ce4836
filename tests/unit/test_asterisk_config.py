"""Rendering Asterisk's configuration: every file renders, values are checked by name."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pbx.asterisk_config import (
    Dirs,
    InboundRoute,
    InstanceSpec,
    NodePeer,
    Ports,
    SipAgent,
    TlsListener,
    check_conf_syntax,
    render,
    spec_from_dict,
    spec_to_dict,
)
from pbx.config_values import ConfigValueError
from pbx.installation import Installation
from pbx.runtime import AsteriskInstance, PortRequest, allocate_ports
from pbx.trunk_config import SipTrunk, TrunkAccount
from web.app import _ari_reach
from web.telephony import ice_networks


def spec(**fields: Any) -> InstanceSpec:
    """The unit PBX's spec, with `fields` changed (wrong values too: they are refused)."""
    base: dict[str, Any] = {
        "name": "unit",
        "dirs": Dirs(root="/srv/switchboard/unit"),
        "ports": Ports(http=18088, sip=15060, ami=15038, rtp_start=30000, rtp_end=30099),
        "max_calls": 16,  # what 100 RTP ports carry
        "ari_user": "switchboard",
        "ari_password": "ari-secret-123",
        "ami_user": "switchboard",
        "ami_secret": "ami-secret-123",
        "trunks": (SipTrunk("carrier", "127.0.0.1", 5070),),
        "agents": (SipAgent("agent-ada", "sip-secret-1", "webrtc", "Ada"),),
        "routes": (InboundRoute("2000", "receptionist"), InboundRoute("_21XX", "sales")),
    }
    base.update(fields)
    return InstanceSpec(**base)


EXPECTED_FILES = {
    "asterisk.conf",
    "modules.conf",
    "http.conf",
    "ari.conf",
    "manager.conf",
    "pjsip.conf",
    "rtp.conf",
    "extensions.conf",
    "musiconhold.conf",
    "indications.conf",
    "logger.conf",
    "queues.conf",
    # Read by Asterisk's core or a loaded module at every boot; present so that a start
    # logs no error about them.
    "cdr.conf",
    "cel.conf",
    "features.conf",
    "acl.conf",
    "udptl.conf",
    "ccss.conf",
    "pjproject.conf",
    "websocket_client.conf",
}


def test_every_file_the_product_needs_is_rendered() -> None:
    assert set(render(spec())) == EXPECTED_FILES


def test_ari_and_ami_bind_loopback_with_generated_secrets() -> None:
    files = render(spec())
    assert "bindaddr = 127.0.0.1" in files["http.conf"]
    assert "bindaddr = 127.0.0.1" in files["manager.conf"]
    assert "password = ari-secret-123" in files["ari.conf"]
    assert "secret = ami-secret-123" in files["manager.conf"]


def test_ami_user_has_no_system_command_config_or_originate_class() -> None:
    manager = render(spec())["manager.conf"]
    classes = set()
    for line in manager.splitlines():
        if line.startswith(("read =", "write =")):
            classes |= set(line.split("=", 1)[1].strip().split(","))
    assert classes
    assert not classes & {"system", "command", "config", "originate", "all"}


def test_modules_are_listed_explicitly_without_refer_or_shell() -> None:
    modules = render(spec())["modules.conf"]
    assert "autoload = no" in modules
    loaded = re.findall(r"^(?:load|require) = (\S+)", modules, re.M)
    assert "res_ari.so" in loaded and "chan_pjsip.so" in loaded
    assert not {"res_pjsip_refer.so", "app_system.so", "func_shell.so", "res_agi.so"} & set(loaded)
    assert "live_dangerously = no" in render(spec())["asterisk.conf"]


def test_dialplan_routes_only_configured_numbers_into_stasis() -> None:
    dialplan = render(spec())["extensions.conf"]
    assert "exten => 2000,1," in dialplan
    assert "exten => _21XX,1," in dialplan
    assert "Stasis(switchboard,inbound,receptionist,${FILTER(0-9+,${EXTEN})})" in dialplan
    assert "_X." not in dialplan and "Dial(" not in dialplan


def test_a_cluster_node_refuses_a_call_its_controller_is_not_there_for() -> None:
    """A single box waits for its controller's app; a cluster node answers 503 at once
    (Hangup(34), before any answer) so the edge sends the call to the next node."""
    alone = render(spec(route_unknown=True))["extensions.conf"]
    assert "Wait(0.5)" in alone and "Hangup(34)" not in alone
    node = render(spec(route_unknown=True, refuse_without_app=True))["extensions.conf"]
    assert "Wait(0.5)" not in node and "STASIS_TRIES" not in node
    for exten in ("exten => 2000,1,", "exten => _[+0-9].,1,"):
        block = node.split(exten, 1)[1].split("exten =>", 1)[0]
        assert block.index("Stasis(") < block.index("Hangup(34)") < block.index("(done)")


def test_only_the_carrier_placing_test_calls_gets_the_test_caller_dialplan() -> None:
    assert "[test-caller]" not in render(spec())["extensions.conf"]
    dialplan = render(spec(test_caller=True))["extensions.conf"]
    assert "[test-caller]" in dialplan and "SendDTMF(0)" in dialplan
    assert "Playback(/srv/switchboard/unit/var/lib/sounds/test-caller)" in dialplan


def test_trunk_is_identified_by_address_and_port() -> None:
    pjsip = render(spec())["pjsip.conf"]
    assert "match = 127.0.0.1:5070" in pjsip
    assert "contact = sip:127.0.0.1:5070" in pjsip


def test_the_digest_realm_is_the_sites_name() -> None:
    assert "default_realm = pbx" in render(spec())["pjsip.conf"]
    site = render(spec(sip_realm="sip.example.com"))["pjsip.conf"]
    assert "default_realm = sip.example.com" in site


def test_webrtc_agent_gets_a_webrtc_endpoint_with_one_registration() -> None:
    pjsip = render(spec())["pjsip.conf"]
    assert "[agent-ada](webrtc-agent)" in pjsip
    assert "media_encryption = dtls" in pjsip  # (test_call_panel_pbx: the whole of it)
    assert "max_contacts = 1" in pjsip


def test_on_a_cluster_node_a_desk_phone_is_the_agent_at_the_edge_a_browser_is_not() -> None:
    agents = (SipAgent("agent-ada", "sip-secret-1", "webrtc", "Ada"),
              SipAgent("desk-bea", "sip-secret-2", "deskphone", "Bea"))
    alone = render(spec(agents=agents))["pjsip.conf"]
    assert "[desk-bea](deskphone-aor)" in alone and "edge-aor)" not in alone
    pjsip = render(spec(agents=agents, agents_edge="192.0.2.1:5060"))["pjsip.conf"]
    # The node calls and qualifies the desk phone at its address of record at the edge.
    assert "[desk-bea](edge-aor)\ncontact = sip:desk-bea@192.0.2.1:5060\n" in pjsip
    edge_aor = pjsip.split("[edge-aor](!,agent-aor)")[1].split("\n[")[0]
    assert "qualify_frequency = 5" in edge_aor
    # A browser still registers to the node it opened its WebSocket to.
    assert "[agent-ada](webrtc-aor)\n\n" in pjsip
    with pytest.raises(ConfigValueError, match=r"cluster\.edge_port"):
        render(spec(agents=agents, agents_edge="192.0.2.1:x"))


def test_with_the_edge_s_websocket_a_browser_is_the_agent_at_the_edge_too() -> None:
    agents = (SipAgent("agent-ada", "sip-secret-1", "webrtc", "Ada"),)
    pjsip = render(spec(agents=agents, agents_edge="192.0.2.1:5060",
                        browsers_at_edge=True))["pjsip.conf"]
    assert "[agent-ada](edge-aor)\ncontact = sip:agent-ada@192.0.2.1:5060\n" in pjsip
    # Called through the edge on UDP, still a WebRTC endpoint (DTLS, ICE) for its media.
    endpoint = pjsip.split("[agent-ada](webrtc-agent)")[1].split("\n[")[0]
    assert "transport = transport-udp" in endpoint


def test_ice_host_candidates_are_unrestricted_unless_networks_are_named() -> None:
    rtp = render(spec())["rtp.conf"]
    assert "ice_deny" not in rtp and "ice_permit" not in rtp
    assert "rtpstart = 30000" in rtp
    lan = render(spec(ice_permit=("10.20.0.0/16",)))["rtp.conf"]
    assert "ice_deny = 0.0.0.0/0" in lan
    assert "ice_permit = 10.20.0.0/16" in lan


def webrtc_template(pjsip: str) -> str:
    return pjsip.split("[webrtc-agent](!)", 1)[1].split("\n[", 1)[0]


def test_browsers_on_other_machines_are_given_the_media_address_in_the_sdp() -> None:
    # On loopback a browser takes whatever candidate the PBX offers: nothing to say.
    assert "media_address" not in webrtc_template(render(spec())["pjsip.conf"])
    lan = render(spec(media_address="10.77.0.1"))["pjsip.conf"]
    assert "media_address = 10.77.0.1" in webrtc_template(lan)


def test_ice_is_kept_to_the_media_address_only_when_it_is_this_hosts_own() -> None:
    assert ice_networks("127.0.0.1") == ()  # Asterisk never offers loopback candidates
    assert ice_networks("0.0.0.0") == ()
    assert ice_networks("192.0.2.77") == ()  # a NAT's address: not on this host
    assert ice_networks("pbx.example.com") == ()


def rendered_limits(files: dict[str, str]) -> tuple[int, int, int]:
    """(maxcalls, rtpstart, rtpend) as Asterisk reads them."""
    def value(name: str, key: str) -> int:
        found = re.search(rf"^{key} = (\d+)$", files[name], re.M)
        assert found, f"{key} missing from {name}"
        return int(found[1])

    return (value("asterisk.conf", "maxcalls"), value("rtp.conf", "rtpstart"),
            value("rtp.conf", "rtpend"))


@pytest.mark.parametrize("max_calls", [1, 51, 100, 400])
def test_the_call_limit_and_the_rtp_range_it_is_given_agree(max_calls: int) -> None:
    # The 51st call failed with "couldn't allocate a port for RTP instance" while
    # maxcalls said 500. A call holds up to three RTP streams on the PBX at once (the
    # caller, the agent, and a second agent or a supervisor; the AI is AudioSocket),
    # each an even port for RTP and the odd one above it for RTCP.
    ports = allocate_ports(PortRequest(), max_calls=max_calls)
    maxcalls, start, end = rendered_limits(render(spec(ports=ports, max_calls=max_calls)))
    assert maxcalls == max_calls
    even_ports = len(range(start + start % 2, end, 2))  # each with its RTCP port above
    assert even_ports >= 3 * maxcalls


def test_an_rtp_range_too_small_for_the_call_limit_is_refused_by_name() -> None:
    with pytest.raises(ConfigValueError) as caught:
        render(spec(max_calls=17))  # 30000-30099: 16 calls
    assert caught.value.key == "asterisk.rtp_end"
    assert "carry 16 calls" in str(caught.value)
    assert "end the range at 30101 or lower asterisk.max_calls" in str(caught.value)


def test_wss_listener_only_when_a_certificate_is_given() -> None:
    assert "tlsenable" not in render(spec())["http.conf"]
    files = render(spec(tls=TlsListener("/certs/c.pem", "/certs/k.pem")))
    assert "tlscertfile = /certs/c.pem" in files["http.conf"]
    assert "[transport-wss]" in files["pjsip.conf"]


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"routes": (InboundRoute("_X.", "receptionist"),)}, "assistants[0].number"),
        ({"routes": (InboundRoute("500&PJSIP/x", "receptionist"),)}, "assistants[0].number"),
        ({"routes": (InboundRoute("_21X!", "sales"),)}, "assistants[0].number"),
        ({"agents": (SipAgent("agent ada", "sip-secret-1"),)}, "agents[0].sip_user"),
        ({"agents": (SipAgent("ada", "short"),)}, "agents[0].sip_password"),
        ({"agents": (SipAgent("ada", "pass;word\n[x]"),)}, "agents[0].sip_password"),
        ({"trunks": (SipTrunk("carrier", "127.0.0.1", 70000),)}, "trunks[0].port"),
        ({"ari_password": "x"}, "asterisk.ari_password"),
        ({"country": "xx"}, "asterisk.country"),
        ({"sip_realm": 'site" nonce="x'}, "asterisk.sip_realm"),
        ({"ports": Ports(http=0, sip=1, ami=2, rtp_start=3, rtp_end=100)}, "asterisk.http_port"),
    ],
)
def test_bad_values_are_refused_by_setting_name(fields: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigValueError) as caught:
        render(spec(**fields))
    assert caught.value.key == key


def test_same_name_for_trunk_and_agent_is_refused() -> None:
    with pytest.raises(ConfigValueError, match="used twice"):
        render(spec(agents=(SipAgent("carrier", "sip-secret-1"),)))


def test_display_names_cannot_break_out_of_the_callerid() -> None:
    pjsip = render(spec(agents=(SipAgent("ada", "sip-secret-1", "webrtc", 'Ada" <evil>\n[x]'),)))[
        "pjsip.conf"
    ]
    assert 'callerid = "Ada evilx" <ada>' in pjsip


def test_syntax_check_catches_a_stray_line() -> None:
    with pytest.raises(ConfigValueError, match=r"x\.conf:2"):
        check_conf_syntax("x.conf", "[general]\nthis is not a setting\n")


def section(conf: str, header: str, kind: str = "") -> str:
    """The lines of the section ``header`` (of ``type = kind`` when names repeat)."""
    for block in conf.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(";")]
        if lines and lines[0] == header and (not kind or f"type = {kind}" in lines):
            return "\n".join(lines)
    raise AssertionError(f"no section {header} {kind}".strip())


REGISTERING = SipTrunk("acme", "sip.acme.example", 5080, from_user="+442071234567",
                       auth="register", username="4420123", password="s3cret!pass",
                       codecs=("alaw", "g722"), qualify_s=30)


def test_a_registering_trunk_registers_and_is_known_by_its_line_only() -> None:
    pjsip = render(spec(trunks=(REGISTERING,)))["pjsip.conf"]
    registration = section(pjsip, "[acme]", "registration")
    for line in ("server_uri = sip:sip.acme.example:5080",
                 "client_uri = sip:4420123@sip.acme.example:5080",
                 "contact_user = 4420123", "line = yes", "endpoint = acme",
                 "outbound_auth = acme-auth"):
        assert line in registration
    auth = section(pjsip, "[acme-auth]")
    assert "username = 4420123" in auth and "password = s3cret!pass" in auth
    endpoint = section(pjsip, "[acme](trunk-endpoint)")
    # Challenged INVITEs are answered; the caller ID is the From user; its codecs only.
    assert "outbound_auth = acme-auth" in endpoint
    assert "from_user = +442071234567" in endpoint
    assert "disallow = all\nallow = alaw,g722" in endpoint
    assert "type = identify" not in pjsip  # no address leads to it
    assert "qualify_frequency = 30" in section(pjsip, "[acme]", "aor")
    assert "s3cret" not in repr(REGISTERING)


def test_a_trunk_known_by_address_has_no_account() -> None:
    pjsip = render(spec())["pjsip.conf"]
    assert "type = registration" not in pjsip and "outbound_auth" not in pjsip
    assert "qualify_frequency" not in section(pjsip, "[carrier]", "aor")  # tests: no OPTIONS


def test_a_carrier_challenges_the_pbx_that_registers_to_it() -> None:
    carrier = render(spec(trunks=(), agents=(),
                          trunk_accounts=(TrunkAccount("switchboard", "pbx-secret"),)))
    endpoint = section(carrier["pjsip.conf"], "[switchboard](trunk-endpoint)")
    assert "identify_by = auth_username" in endpoint and "auth = switchboard" in endpoint
    assert "max_contacts = 1" in section(carrier["pjsip.conf"], "[switchboard]", "aor")


@pytest.mark.parametrize(("trunk", "key"), [
    (replace(REGISTERING, password="pass;word"), "trunks[0].password"),
    (replace(REGISTERING, password=""), "trunks[0].username"),
    (replace(REGISTERING, username="a b"), "trunks[0].username"),
    (replace(REGISTERING, codecs=()), "trunks[0].codecs"),
    (replace(REGISTERING, from_user="+1 555"), "trunks[0].caller_id"),
    (replace(REGISTERING, auth="ip"), "trunks[0].auth"),
])
def test_a_bad_trunk_is_refused_by_its_key(trunk: SipTrunk, key: str) -> None:
    with pytest.raises(ConfigValueError) as caught:
        render(spec(trunks=(trunk,)))
    assert caught.value.key == key
    assert "pass;word" not in str(caught.value)


def test_a_registering_trunk_survives_the_state_file() -> None:
    original = spec(trunks=(REGISTERING,))
    again = spec_from_dict(json.loads(json.dumps(spec_to_dict(original))))
    assert again.trunks == original.trunks


def test_a_cluster_node_has_a_trunk_to_each_other_node_into_its_own_context() -> None:
    """handoff.live.xnode: the other node calls for a handoff by its id; only the peer's
    address and port reach the from-node context, and nothing is dialled from it."""
    alone = render(spec())
    assert "[from-node]" not in alone["extensions.conf"]
    peered = spec(peers=(NodePeer("node-b", "192.0.2.12", 5062),))
    files = render(peered)
    pjsip = files["pjsip.conf"]
    assert "[peer-node-b](trunk-endpoint)" in pjsip
    assert "match = 192.0.2.12:5062" in pjsip and "contact = sip:192.0.2.12:5062" in pjsip
    endpoint = pjsip.split("[peer-node-b](trunk-endpoint)")[1].split("\n\n")[0]
    assert "context = from-node" in endpoint
    dialplan = files["extensions.conf"].split("[from-node]")[1].split("\n[")[0]
    # _X!: a handoff's id may have one digit (_X. needs two).
    assert "exten => _X!,1," in dialplan and "Dial(" not in dialplan
    assert "Stasis(switchboard,xnode,${FILTER(0-9,${EXTEN})})" in dialplan
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(peered)))).peers == peered.peers
    with pytest.raises(ConfigValueError) as caught:
        render(spec(peers=(NodePeer("node-b", "192.0.2.12"), NodePeer("node-b", "192.0.2.13"))))
    assert caught.value.key == "peers[1].name"


@pytest.mark.parametrize(("bind", "said"), [
    ("127.0.0.1", " (loopback only)"),
    ("0.0.0.0", " (and on 0.0.0.0: keep its port firewalled to this machine)"),
    ("10.78.0.2", " (and on 10.78.0.2: keep its port firewalled to this machine)"),
])
def test_the_banner_says_where_the_started_asterisks_ari_listens(bind: str, said: str) -> None:
    # Asterisk's HTTP (ARI) listens where SIP does: a cluster node binding its node's
    # address was told "loopback only".
    pbx = AsteriskInstance(Installation(kind="embedded", version="22"), spec(bind_address=bind),
                           Path("/"))
    assert _ari_reach(pbx) == said
