"""Who can take a call: agents, their roles, how their phone is reached, their presence."""

from __future__ import annotations

import enum


class AgentRole(enum.StrEnum):
    AGENT = "agent"
    # Can listen, whisper, barge and take over other agents' and the AI's calls.
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class EndpointKind(enum.StrEnum):
    # A browser softphone: PJSIP endpoint with webrtc=yes (DTLS-SRTP over WSS).
    WEBRTC = "webrtc"
    # A SIP desk phone on the LAN.
    DESKPHONE = "deskphone"


class Presence(enum.StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    AWAY = "away"
    # After a call, before the agent takes the next card (notes, dispositions).
    WRAP_UP = "wrap_up"
