"""Reading Asterisk's RTP statistics (the RTPAUDIOQOS variables) into a leg's figures.

The values are as Asterisk 22 wrote them on a real call of the integration suite: the
caller's leg (the carrier's Asterisk sends RTCP) and a desk phone's (it sends none)."""

from __future__ import annotations

import pytest

from handoff.quality import NO_AUDIO, NO_RTCP, BadQuality, LegQuality, fields_of

CALLER = {
    "RTPAUDIOQOS": "ssrc=436090691;themssrc=1480512953;lp=6;rxjitter=0.001750;rxcount=594;"
                   "txjitter=0.005000;txcount=612;rlp=3;rtt=0.005187;rxmes=88.03;txmes=88.08",
    "RTPAUDIOQOSJITTER": "minrxjitter=000.000000;maxrxjitter=000.006375;"
                         "avgrxjitter=000.001389;stdevrxjitter=000.001276;"
                         "mintxjitter=000.000375;maxtxjitter=000.001750;"
                         "avgtxjitter=000.001063;stdevtxjitter=000.000687;",
    "RTPAUDIOQOSLOSS": "  minrxlost=000.000000;  maxrxlost=000.000000;",
    "RTPAUDIOQOSRTT": "     minrtt=000.005187;     maxrtt=000.005187;     avgrtt=000.005187;"
                      "     stdevrtt=000.000000;",
}
DESK_PHONE = {
    "RTPAUDIOQOS": "ssrc=2003713389;themssrc=2824748070;lp=0;rxjitter=0.000000;rxcount=607;"
                   "txjitter=0.002375;txcount=604;rlp=0;rtt=0.000000;rxmes=0.0;txmes=88.08",
    "RTPAUDIOQOSJITTER": "minrxjitter=000.000000;maxrxjitter=000.004250;"
                         "avgrxjitter=000.000845;stdevrxjitter=000.000868;"
                         "mintxjitter=000.000000;maxtxjitter=000.000000;"
                         "avgtxjitter=000.000000;stdevtxjitter=000.000000;",
    "RTPAUDIOQOSLOSS": "",
    "RTPAUDIOQOSRTT": "     minrtt=000.000000;     maxrtt=000.000000;     avgrtt=000.000000;"
                      "     stdevrtt=000.000000;",
}


def test_a_leg_whose_far_end_sends_rtcp_has_every_figure() -> None:
    q = LegQuality.from_variables(CALLER)
    assert q.packets_received == 594
    assert (q.jitter_ms, q.jitter_max_ms) == (1.389, 6.375)  # Asterisk's own measure
    assert q.loss_pct == 1.0  # 6 missing of 600 sent its way
    assert q.rtt_ms == 5.187
    assert q.far_jitter_ms == 1.063  # what the far end reported of our audio
    assert q.far_loss_pct == round(100 * 3 / 612, 3)
    assert q.why_absent is None


def test_a_phone_without_rtcp_has_no_round_trip_and_says_why() -> None:
    q = LegQuality.from_variables(DESK_PHONE)
    assert (q.jitter_ms, q.loss_pct) == (0.845, 0.0)
    assert (q.rtt_ms, q.far_jitter_ms, q.far_loss_pct) == (None, None, None)
    assert q.why_absent == NO_RTCP


def test_a_leg_that_sent_no_audio_has_no_jitter_or_loss_rather_than_zeros() -> None:
    silent = dict(DESK_PHONE, RTPAUDIOQOS=DESK_PHONE["RTPAUDIOQOS"].replace(
        "rxcount=607", "rxcount=0"))
    q = LegQuality.from_variables(silent)
    assert (q.packets_received, q.jitter_ms, q.loss_pct) == (0, None, None)
    assert q.why_absent == NO_AUDIO


@pytest.mark.parametrize("broken", [
    {k: v for k, v in CALLER.items() if k != "RTPAUDIOQOSRTT"},
    dict(CALLER, RTPAUDIOQOS="ssrc=1;lp=0"),
    dict(CALLER, RTPAUDIOQOSRTT="maxrtt=fast;avgrtt=0"),
], ids=["a_variable_missing", "a_field_missing", "not_a_number"])
def test_statistics_in_another_form_are_refused_saying_what_is_wrong(
    broken: dict[str, str],
) -> None:
    with pytest.raises(BadQuality):
        LegQuality.from_variables(broken)


def test_fields_are_read_whatever_the_padding() -> None:
    assert fields_of("  minrxlost=000.5;  maxrxlost=001.000000;") == {
        "minrxlost": 0.5, "maxrxlost": 1.0}
