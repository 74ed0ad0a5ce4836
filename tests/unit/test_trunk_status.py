"""A trunk's status from what Asterisk says of it, and its metrics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pbx.trunk_config import SipTrunk
from pbx.trunk_status import (
    TrunkState,
    TrunkStatus,
    client_uri,
    judge,
    read_statuses,
    registration_errors,
)
from web.trunk_watch import TrunkMetrics

ACME = SipTrunk("acme", "sip.acme.example", 5060, auth="register", username="4420",
                password="s3cret-pass")
BY_ADDRESS = SipTrunk("backup", "192.0.2.10")

LOG = """\
[2026-12-01 10:00:00.000] WARNING[12] res_pjsip_outbound_registration.c: No response \
received from 'sip:sip.acme.example:5060' on registration attempt to \
'sip:4420@sip.acme.example:5060', retrying in '30'
[2026-12-01 10:00:30.000] WARNING[12] res_pjsip_outbound_registration.c: Fatal response \
'401' received from 'sip:sip.acme.example:5060' on registration attempt to \
'sip:4420@sip.acme.example:5060', stopping outbound registration
"""


def test_the_last_registration_failure_is_read_from_asterisks_log(tmp_path: Path) -> None:
    log = tmp_path / "messages.log"
    log.write_text(LOG)
    assert registration_errors(log) == {client_uri(ACME): "401"}
    assert registration_errors(tmp_path / "missing.log") == {}


@pytest.mark.parametrize(("trunk", "registration", "endpoint", "failure", "expected"), [
    (ACME, "Registered", "online", "401", TrunkStatus(TrunkState.REGISTERED)),
    (ACME, "Rejected", "online", "401", TrunkStatus(
        TrunkState.REJECTED, "sip.acme.example:5060 refused the registration (SIP 401): "
        "check the username and password")),
    (ACME, "Rejected", "online", "503", TrunkStatus(
        TrunkState.REJECTED, "sip.acme.example:5060 refused the registration (SIP 503)")),
    (ACME, "Rejected", "unknown", "none", TrunkStatus(
        TrunkState.UNREACHABLE, "no answer from sip.acme.example:5060")),
    (ACME, "Unregistered", "offline", None, TrunkStatus(
        TrunkState.UNREACHABLE, "no answer from sip.acme.example:5060")),
    (ACME, "Unregistered", "online", None, TrunkStatus(TrunkState.REGISTERING)),
    (ACME, None, "unknown", None, TrunkStatus(TrunkState.UNKNOWN)),
    (BY_ADDRESS, None, "online", None, TrunkStatus(TrunkState.REACHABLE)),
    (BY_ADDRESS, None, "offline", None, TrunkStatus(
        TrunkState.UNREACHABLE, "no answer from 192.0.2.10:5060")),
])
def test_a_trunks_status_says_what_went_wrong(
    trunk: SipTrunk, registration: str | None, endpoint: str, failure: str | None,
    expected: TrunkStatus,
) -> None:
    assert judge(trunk, registration, endpoint, failure) == expected


class Ami:
    async def send_action(self, action: Mapping[str, str]) -> list[Mapping[str, object]]:
        return [{"Response": "Success", "EventList": "start"},
                {"Event": "OutboundRegistrationDetail", "ObjectName": "acme",
                 "Status": "Rejected"},
                {"Event": "OutboundRegistrationDetailComplete"}]


async def test_statuses_and_metrics_come_from_ami_ari_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "messages.log"
    log.write_text(LOG)

    async def endpoint_state(name: str) -> str:
        return {"acme": "online", "backup": "online"}[name]

    statuses = await read_statuses((ACME, BY_ADDRESS), Ami(), endpoint_state, log)
    assert statuses["acme"].state is TrunkState.REJECTED and "SIP 401" in statuses[
        "acme"].last_error
    assert statuses["backup"].state is TrunkState.REACHABLE
    registry = CollectorRegistry()
    registry.register(TrunkMetrics(lambda: statuses))
    assert registry.get_sample_value("switchboard_trunk_up", {"trunk": "acme"}) == 0.0
    assert registry.get_sample_value("switchboard_trunk_up", {"trunk": "backup"}) == 1.0
    assert registry.get_sample_value("switchboard_trunk_state",
                                     {"trunk": "acme", "state": "rejected"}) == 1.0
    assert registry.get_sample_value("switchboard_trunk_state",
                                     {"trunk": "acme", "state": "registered"}) == 0.0
