"""The measuring stick for audio tests: tones survive mu-law and are told apart."""

from __future__ import annotations

import numpy as np
import pytest

from web.bench.audio import (
    FRAME,
    TONES,
    label,
    present,
    tone,
    tone_frames,
    ulaw_decode,
    ulaw_encode,
)


def test_mu_law_round_trip_keeps_the_waveform() -> None:
    signal = tone(1000, 0.1)
    decoded = ulaw_decode(ulaw_encode(signal))
    error = np.abs(decoded.astype(np.int32) - signal.astype(np.int32))
    assert error.max() < 0.06 * 32767 * 0.3 + 64


@pytest.mark.parametrize("who", list(TONES))
def test_each_party_is_recognised_after_mu_law(who: str) -> None:
    for frame in tone_frames(TONES[who])[:10]:
        assert label(ulaw_decode(ulaw_encode(frame))) == who


def test_silence_and_low_noise_are_nobody() -> None:
    assert label(np.zeros(FRAME, np.int16)) is None
    rng = np.random.default_rng(1)
    assert label((rng.normal(0, 50, FRAME)).astype(np.int16)) is None


def test_a_mix_of_two_parties_is_labelled_by_the_stronger() -> None:
    mix = tone(TONES["agent"], 0.02, 0.3) + tone(TONES["ai"], 0.02, 0.05)
    assert label(mix) == "agent"


def test_a_mix_shows_both_parties_present() -> None:
    mix = tone(TONES["agent"], 0.02, 0.2) + tone(TONES["ai"], 0.02, 0.2)
    assert present(mix) == {"agent", "ai"}
    assert present(tone(TONES["caller"], 0.02)) == {"caller"}
