"""What every flow of the controller shares: its timings, the AI engines' interface, and
a base class that reaches the controller's parts and the other flows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from handoff.live.control import CallControl


class AiEngine(Protocol):
    """Where an assistant's AudioSocket audio goes, and how it learns a call is coming."""

    @property
    def address(self) -> str: ...

    def expect_call(self, call_id: str) -> None: ...


@dataclass
class Timing:
    ring_timeout_s: int = 20
    # How many likely agents get a leg (or their open line, muted) staged in the call
    # bridge per offered handoff. Each is a channel the bridge mixes for nobody: cheap,
    # but not free, so bounded.
    staged_agents: int = 4
    # The AI leaves once the agent's voice reaches Asterisk, not at the 200 OK: a desk
    # phone's first RTP packet trails its answer by a few ms, a browser's by 60-130 ms
    # (ICE and DTLS come after the answer). Removing the AI before that left the caller
    # in silence. It leaves this long after the agent's first packet arrived (one mixing
    # frame and a margin: a short overlap is not noticeable, a hole in the audio is)...
    ai_overlap_s: float = 0.04
    # ...or after this long without any packet from the agent (a phone that suppresses
    # silence sends nothing until its user speaks).
    agent_media_wait_s: float = 1.5
    # An open line moved into the call's bridge is mixed from the bridge's next tick
    # (every 20 ms): the AI leaves one tick after the move, so that its last frame and
    # the agent's first meet rather than leave a hole (at most one tick of both).
    line_overlap_s: float = 0.02
    # How often the agent leg's RTP counters are read while waiting.
    agent_media_poll_s: float = 0.005
    # An open line is ready for Accept once the agent's audio reaches Asterisk, not at
    # its SIP answer: a network that passes the signalling and drops RTP answers lines
    # that are deaf. A desk phone sends within milliseconds, a browser after ICE and DTLS
    # (about 100 ms; seconds on a loaded box); a line with no audio by then is hung up
    # and opened again (the browsers' own RTP timeout is as long: pjsip.conf).
    line_media_wait_s: float = 5.0
    line_media_poll_s: float = 0.02  # one packet's time: nobody waits on it at Accept
    # A line that never carried audio is opened again after this long, doubling with
    # each one that fails in a row up to the maximum; a line heard starts again at the
    # first. A network outage then costs the PBX a line attempt a minute, not every 6 s.
    line_retry_s: float = 1.0
    line_retry_max_s: float = 60.0
    # After their part of a call, an available agent is in wrap-up this long (notes,
    # follow-up) before the next card; 0: straight back to available. The product sets
    # it from the desk.wrap_up_s setting (default 15 s).
    wrap_up_s: float = 0.0
    # How often a queued card that waits for a free member looks again, besides every
    # agent, card and call event of this process (a change made by another process).
    queue_poll_s: float = 1.0
    # How long a DTMF menu waits for a key, the prompt included, before it says it again
    # (once), then lets the menu's own assistant answer.
    menu_wait_s: float = 12.0
    # The longest voicemail a caller may leave before the call is ended for them. The
    # product sets it from desk.voicemail_max_s.
    voicemail_max_s: float = 120.0
    # How long a desk waits for another node of a cluster to answer a command on a call
    # it holds (handoff.live.node_requests), and how often the request is sent again
    # meanwhile (a NOTIFY lost in a blip of the link is never sent again by PostgreSQL).
    node_reply_s: float = 4.0
    node_resend_s: float = 1.0


class Flow:
    """One flow of the live-call controller (offer, move, transfer...).

    Flows share the controller's ARI client, store, event hub and timings, and call
    each other through it (``self.ctl.moves``, ``self.ctl.offers``...), so each module
    holds one flow and a newcomer can find a step of the call by its name.
    """

    def __init__(self, ctl: CallControl) -> None:
        self.ctl = ctl
        self.ari = ctl.ari
        self.store = ctl.store
        self.hub = ctl.hub
        self.timing = ctl.timing
