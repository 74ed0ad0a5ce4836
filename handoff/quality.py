"""How a leg sounded: jitter, loss and round-trip time from Asterisk's RTP statistics.

When a PJSIP leg ends, Asterisk writes what its RTP stack measured into four channel
variables, in this order and in one go (``ast_rtp_instance_set_stats_vars`` in
``main/rtp_engine.c``): ``RTPAUDIOQOS``, ``RTPAUDIOQOSJITTER``, ``RTPAUDIOQOSLOSS``,
``RTPAUDIOQOSRTT``. It does so on an ARI hang-up (``DELETE /channels``, before the soft
hang-up) and on the far end's BYE (``chan_pjsip_session_end``, before the hang-up is
queued), so both reach the Stasis app as ChannelVarset events while the leg is still
ours. Only the first writing counts: Asterisk never overwrites them.

The variables mix two points of view, and their names do not say which:

- what Asterisk measured of the audio it *received* from the leg (its own RFC 3550
  interarrival jitter, and the packets missing from the sequence numbers): always
  there once the leg sent audio. ``RTPAUDIOQOS``'s ``txjitter`` and
  ``RTPAUDIOQOSJITTER``'s ``*rxjitter`` fields, ``lp`` and ``rxcount``;
- what the far end *reported* of the audio Asterisk sent it, and the round-trip time,
  which both need the far end's RTCP receiver reports: ``rxjitter``, ``rlp``, ``rtt``
  and ``RTPAUDIOQOSJITTER``'s ``*txjitter``. A phone that sends no RTCP (or a leg
  shorter than one report interval, 5 s by default) leaves them all at zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

QOS = "RTPAUDIOQOS"
QOS_JITTER = "RTPAUDIOQOSJITTER"
QOS_LOSS = "RTPAUDIOQOSLOSS"
QOS_RTT = "RTPAUDIOQOSRTT"
# Set last of the four: when it arrives the others have.
QOS_VARIABLES = (QOS, QOS_JITTER, QOS_LOSS, QOS_RTT)

NO_AUDIO = "no audio came from this leg"
NO_RTCP = "no RTCP report from the far end (a phone without RTCP, or a line under 5 s)"


class BadQuality(ValueError):
    """Asterisk's statistics were missing or not in the form this module reads."""


def fields_of(value: str) -> dict[str, float]:
    """``"minrtt=000.005187; maxrtt=..."`` as numbers by name."""
    out: dict[str, float] = {}
    for part in value.split(";"):
        name, sep, number = part.strip().partition("=")
        if not sep:
            continue
        try:
            out[name.strip()] = float(number)
        except ValueError:
            raise BadQuality(f"{name.strip()}={number!r} is not a number") from None
    return out


def _need(found: Mapping[str, float], *names: str) -> list[float]:
    missing = [n for n in names if n not in found]
    if missing:
        raise BadQuality("missing " + ", ".join(missing))
    return [found[n] for n in names]


@dataclass(frozen=True, slots=True)
class LegQuality:
    """One leg's figures; None where there was nothing to measure (see ``why_absent``)."""

    packets_received: int
    # Mean and worst of Asterisk's interarrival jitter of the leg's audio.
    jitter_ms: float | None
    jitter_max_ms: float | None
    # The leg's packets lost on their way to Asterisk, as of its last RTCP report.
    loss_pct: float | None
    # Mean round-trip time, timed from the far end's RTCP receiver reports.
    rtt_ms: float | None
    # What the far end reported of the audio Asterisk sent it.
    far_jitter_ms: float | None
    far_loss_pct: float | None

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> LegQuality:
        """From the values of QOS_VARIABLES (RTPAUDIOQOSLOSS is not needed)."""
        try:
            qos = fields_of(variables[QOS])
            jitter = fields_of(variables[QOS_JITTER])
            rtt = fields_of(variables[QOS_RTT])
        except KeyError as exc:
            raise BadQuality(f"{exc.args[0]} was not set") from None
        received, lost, sent, far_lost = _need(qos, "rxcount", "lp", "txcount", "rlp")
        mean_jitter, worst_jitter, far_jitter, far_worst = _need(
            jitter, "avgrxjitter", "maxrxjitter", "avgtxjitter", "maxtxjitter")
        mean_rtt, worst_rtt = _need(rtt, "avgrtt", "maxrtt")
        heard = received > 0
        # Any of these is non-zero only after a receiver report from the far end.
        reported = worst_rtt > 0 or far_worst > 0 or far_lost > 0
        return cls(
            packets_received=int(received),
            jitter_ms=_ms(mean_jitter) if heard else None,
            jitter_max_ms=_ms(worst_jitter) if heard else None,
            loss_pct=_pct(lost, lost + received) if heard else None,
            rtt_ms=_ms(mean_rtt) if worst_rtt > 0 else None,
            far_jitter_ms=_ms(far_jitter) if reported else None,
            far_loss_pct=_pct(far_lost, sent) if reported and sent > 0 else None,
        )

    @property
    def why_absent(self) -> str | None:
        """Why a figure is missing, in words (None: all there)."""
        if self.jitter_ms is None:
            return NO_AUDIO
        if self.rtt_ms is None:
            return NO_RTCP
        return None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _pct(part: float, whole: float) -> float:
    return round(min(100.0, max(0.0, 100 * part / whole)), 3) if whole > 0 else 0.0
