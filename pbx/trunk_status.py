"""Each trunk's state as Asterisk 22 reports it: registered, unreachable, rejected.

Three sources, none of which needs more rights than the controller's users hold:

- AMI ``PJSIPShowRegistrationsOutbound``: each registration's Status (Registered,
  Unregistered, Rejected). The action is open to the ``reporting`` write class the
  controller's AMI user already has. (The pushed ``Registry`` events would need the
  ``system`` read class, and carry no cause either, so we ask instead.)
- ARI ``GET /endpoints/PJSIP/<trunk>``: online or offline, from the OPTIONS the PBX
  sends every few seconds (``qualify_frequency``): a carrier that stopped answering.
- Asterisk's own log: the SIP answer that ended a registration ("Fatal response '401'
  received from ... on registration attempt to ..."), the one place Asterisk names it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pbx.ari import AriClient, AriNotFound
from pbx.trunk_config import SipTrunk

# Enough of the log's end to hold the last registration attempts of every trunk.
LOG_TAIL_BYTES = 256 * 1024


class TrunkState(enum.StrEnum):
    REGISTERED = "registered"
    REGISTERING = "registering"  # sent, no final answer yet
    REJECTED = "rejected"  # the carrier refused our REGISTER (credentials, account)
    REACHABLE = "reachable"  # recognised by address, and answering our OPTIONS
    UNREACHABLE = "unreachable"  # no answer to OPTIONS or REGISTER
    UNKNOWN = "unknown"  # not checked yet, or Asterisk did not say


@dataclass(frozen=True)
class TrunkStatus:
    state: TrunkState
    last_error: str = ""

    @property
    def up(self) -> bool:
        return self.state in (TrunkState.REGISTERED, TrunkState.REACHABLE)


class Registrations(Protocol):
    async def send_action(self, action: Mapping[str, str]) -> list[Mapping[str, object]]: ...


# A PJSIP endpoint's state from ARI: "online", "offline" or "unknown" (also for an
# endpoint Asterisk lacks).
EndpointState = Callable[[str], Awaitable[str]]


def endpoint_states(ari: AriClient) -> EndpointState:
    async def state(name: str) -> str:
        try:
            return str((await ari.endpoints.get("PJSIP", name)).get("state") or "unknown")
        except AriNotFound:
            return "unknown"

    return state


async def registrations(ami: Registrations) -> dict[str, str]:
    """Each outbound registration's Status, by its name (the trunk's)."""
    messages = await ami.send_action({"Action": "PJSIPShowRegistrationsOutbound"})
    return {str(m.get("ObjectName")): str(m.get("Status", ""))
            for m in messages if m.get("Event") == "OutboundRegistrationDetail"}


_ATTEMPT = re.compile(
    r"(?:(?:Fatal|Temporal) response '(?P<code>\d{3})'|(?P<none>No response)) received "
    r"from '[^']*' on registration attempt to '(?P<client>[^']*)'")


def registration_errors(log_file: Path) -> dict[str, str]:
    """The last registration failure Asterisk logged, by client URI: "401" or "none"."""
    try:
        with log_file.open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
            tail = log.read().decode(errors="replace")
    except OSError:
        return {}
    return {m["client"]: m["code"] or "none" for m in _ATTEMPT.finditer(tail)}


def client_uri(trunk: SipTrunk) -> str:
    return f"sip:{trunk.username}@{trunk.host}:{trunk.port}"


def judge(trunk: SipTrunk, registration: str | None, endpoint: str,
          failure: str | None) -> TrunkStatus:
    """A trunk's status from what Asterisk said of it (see the module's sources)."""
    where = f"{trunk.host}:{trunk.port}"
    silent = TrunkStatus(TrunkState.UNREACHABLE, f"no answer from {where}")
    if trunk.auth != "register":
        if endpoint == "online":
            return TrunkStatus(TrunkState.REACHABLE)
        return silent if endpoint == "offline" else TrunkStatus(TrunkState.UNKNOWN)
    if registration == "Registered":
        return TrunkStatus(TrunkState.REGISTERED)
    if endpoint == "offline" or (registration == "Rejected" and failure == "none"):
        return silent
    if registration == "Rejected":
        code = f" (SIP {failure})" if failure else ""
        hint = ": check the username and password" if failure in ("401", "403", "407", None) \
            else ""
        return TrunkStatus(TrunkState.REJECTED,
                           f"{where} refused the registration{code}{hint}")
    if registration == "Unregistered":
        return TrunkStatus(TrunkState.REGISTERING)
    return TrunkStatus(TrunkState.UNKNOWN)


async def read_statuses(trunks: Sequence[SipTrunk], ami: Registrations,
                        endpoint_state: EndpointState,
                        log_file: Path | None) -> dict[str, TrunkStatus]:
    """Every trunk's status now (without the carrier's last SIP answer when Asterisk's
    log is on another host: ``log_file`` None)."""
    registered = await registrations(ami) if any(t.auth == "register" for t in trunks) else {}
    failures = registration_errors(log_file) if registered and log_file else {}
    out = {}
    for trunk in trunks:
        out[trunk.name] = judge(trunk, registered.get(trunk.name),
                                await endpoint_state(trunk.name),
                                failures.get(client_uri(trunk)))
    return out
