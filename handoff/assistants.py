"""An assistant: one AI voice agent behind a set of numbers, with its handoff rules."""

from __future__ import annotations

import enum
from typing import Protocol

# How long a card stays on offer before the assistant's fallback applies, unless the
# assistant says otherwise.
DEFAULT_ACCEPT_TIMEOUT_S = 30


def accept_timeout_s(assistant: HasAcceptTimeout | None) -> float:
    """The assistant's own offer timeout; the default for a call whose assistant has
    since been removed."""
    return float(assistant.accept_timeout_s if assistant else DEFAULT_ACCEPT_TIMEOUT_S)


class HasAcceptTimeout(Protocol):
    @property
    def accept_timeout_s(self) -> int: ...


class HandoffLevel(enum.StrEnum):
    """How readily the assistant gives the call to a person."""

    # Never hands off; restricted topics still force a human.
    AI_ONLY = "ai_only"
    # A person as soon as the caller asks.
    QUICK = "quick"
    BALANCED = "balanced"
    # The AI tries to resolve first and hands off only when it cannot.
    AI_FIRST = "ai_first"


class FallbackKind(enum.StrEnum):
    """What happens when nobody is on duty or nobody accepts in time."""

    # Bridge the caller to an outside number over the PJSIP trunk.
    NUMBER = "number"
    # The AI keeps the call and records a callback request.
    AI_CALLBACK = "ai_callback"
    # The caller leaves a message (a prompt, a beep, the call's recording from there):
    # a callback request with the message to play.
    VOICEMAIL = "voicemail"


class EngineKind(enum.StrEnum):
    """Where an assistant's calls go for their AI part."""

    # The reference receptionist inside Switchboard (one instance for every assistant
    # that uses it); its control tokens are Switchboard's own.
    BUILTIN = "builtin"
    # An engine of the installation's own, reached over AudioSocket at host:port.
    AUDIOSOCKET = "audiosocket"


class Moment(enum.StrEnum):
    """When a person joins the caller, and the assistant may have the caller told so."""

    HANDOVER = "handover"  # the agent who accepted the card
    TAKEOVER = "takeover"  # a supervisor taking the call over
    TRANSFER = "transfer"  # a colleague an agent handed the caller to


# An announcement is a sentence or two, said while the person is already on the line.
ANNOUNCEMENT_MAX = 300


def check_announcements(raw: dict[str, str]) -> dict[str, str]:
    """Each moment's words (missing or empty: silence), or ValueError saying why."""
    out: dict[str, str] = {}
    for moment, text in raw.items():
        try:
            Moment(moment)
        except ValueError:
            raise ValueError(f"{moment!r}: an announcement is for one of "
                             + ", ".join(m.value for m in Moment)) from None
        words = " ".join(str(text).split())
        if len(words) > ANNOUNCEMENT_MAX:
            raise ValueError(f"the {moment} announcement is {ANNOUNCEMENT_MAX} characters "
                             "at most")
        if words:
            out[moment] = words
    return {m.value: out[m.value] for m in Moment if m.value in out}


class HoldMode(enum.StrEnum):
    """What the caller hears while the handoff card rings."""

    # The AI stays in the bridge and says it is connecting.
    AI = "ai"
    MOH = "moh"
