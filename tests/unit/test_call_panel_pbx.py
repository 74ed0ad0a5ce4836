"""What the PBX configuration does for the browser softphone's calls."""

from __future__ import annotations

import re

from pbx.asterisk_config import render
from tests.unit.test_asterisk_config import spec


def endpoint_template(pjsip: str, name: str) -> str:
    found = re.search(rf"^\[{name}\]\(!\)\n(.*?)(?=^\[)", pjsip, re.S | re.M)
    assert found is not None, name
    return found[1]


def test_a_browser_phone_takes_only_dtls_srtp_media() -> None:
    # What webrtc = yes sets, except that it would answer an offer in the offer's own
    # profile, plain RTP included (R19 of issue 16).
    webrtc = endpoint_template(render(spec())["pjsip.conf"], "webrtc-agent")
    for line in ("media_encryption = dtls", "dtls_verify = fingerprint", "dtls_setup = actpass",
                 "ice_support = yes", "use_avpf = yes", "rtcp_mux = yes", "bundle = yes",
                 "media_use_received_transport = no", "dtls_auto_generate_cert = yes"):
        assert line in webrtc, line
    assert not re.search(r"^webrtc\s*=", webrtc, re.M)


def test_a_vanished_browser_is_noticed_within_seconds_but_desk_phones_keep_the_default() -> None:
    # A closed tab sends no BYE and its WebSocket closing leaves the call up in
    # Asterisk 22: the media timeout is what gives the caller back to the AI.
    pjsip = render(spec(rtp_timeout=30, webrtc_rtp_timeout=5))["pjsip.conf"]
    assert "rtp_timeout = 5" in endpoint_template(pjsip, "webrtc-agent")
    assert "rtp_timeout = 30" in endpoint_template(pjsip, "deskphone-agent")
    assert "rtp_timeout = 30" in endpoint_template(pjsip, "trunk-endpoint")
