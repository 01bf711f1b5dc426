"""Latency targets: `--latency-ms` / ``Tokenizer.stream(latency_ms=...)`` choose the window lengths.

The choice rests on one formula, a frame's wait for the audio after it (stream_target's module
notes); it is checked here against what a stream actually does, frame by frame. The choice itself
is checked on fixed calibrations, so the outcome does not depend on this machine's load.
"""

from __future__ import annotations

import numpy as np
import pytest

from audiotok.runtime import SettingsError, Tokenizer
from audiotok.runtime.constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES
from audiotok.runtime.stream import StreamSettings
from audiotok.runtime.stream_target import (CACHED_LADDER, LADDER, MAX_CORES, MIN_TARGET_MS, Calibration,
                                            calibrate_cached, choose, frame_waits_ms, latency_target, predict)

RATE = 16_000


def emitted_after(tokenizer: Tokenizer, settings: StreamSettings, audio: np.ndarray) -> dict[int, int]:
    """Frame -> samples received when its unit came out, feeding whole frames (400, then 320 at a time)."""
    stream = tokenizer.stream(settings=settings)
    when: dict[int, int] = {}
    edges = [0, RECEPTIVE_FIELD_SAMPLES, *range(RECEPTIVE_FIELD_SAMPLES + HOP_SAMPLES, len(audio) + 1, HOP_SAMPLES)]
    for lo, hi in zip(edges, edges[1:]):
        for chunk in stream.accept(audio[lo:hi]):
            for frame in range(chunk.frame, chunk.stop):
                assert frame not in when, f"frame {frame} emitted twice"
                when[frame] = hi
    return when


@pytest.mark.parametrize("setting", sorted(set(LADDER) | set(CACHED_LADDER)))
def test_frame_waits_are_what_a_stream_does(logmel_bundle, speech_16k, setting):
    """Every frame of every full chunk waits exactly frame_waits_ms for audio after its last sample."""
    tokenizer = Tokenizer(logmel_bundle)
    settings = StreamSettings(*setting)
    when = emitted_after(tokenizer, settings, speech_16k[: 3 * RATE])
    chunk = settings.policy.chunk_frames
    full = [f for f in when if f >= settings.policy.context_frames + chunk]  # steady state: context full
    assert full
    for frame in full:
        last_sample = frame * HOP_SAMPLES + RECEPTIVE_FIELD_SAMPLES
        waited_ms = (when[frame] - last_sample) * 1000 / RATE
        assert waited_ms == frame_waits_ms(settings.chunk_ms, settings.lookahead_ms)[frame % chunk]


def test_no_lookahead_still_waits_for_the_next_frame():
    assert frame_waits_ms(60, 0).tolist() == [60.0, 40.0, 20.0]
    assert frame_waits_ms(60, 40).tolist() == [80.0, 60.0, 40.0]


def test_choice_is_the_best_agreeing_setting_that_fits():
    slow = Calibration(fixed_ms=10.0, per_frame_ms=1.0)
    for target in (150, 250, 400, 1_000):
        chosen = choose(target, slow)
        assert chosen.p95_ms <= target and chosen.cores <= MAX_CORES
        fitting = [s for s in LADDER if predict(StreamSettings(*s), slow).p95_ms <= target
                   and predict(StreamSettings(*s), slow).cores <= MAX_CORES]
        s = chosen.settings
        assert (s.chunk_ms, s.lookahead_ms, s.context_ms) == fitting[0]
    compute = 10.0 + 1.0 * (160 + 320 + 80) / 20  # 160/80/320: a window of 28 frames
    waits = np.sort((7 - np.arange(8) + 4) * 20.0)
    p95 = float(np.percentile(waits, 95)) + 1.25 * compute
    assert predict(StreamSettings(160, 80, 320), slow).p95_ms == pytest.approx(p95)


def test_a_cached_stream_pays_the_cnn_of_its_chunk_only():
    """With a stream entry point a window costs the CNN of its chunk's new frames plus the rest of the
    window: the choice runs down CACHED_LADDER on that cost."""
    cached = Calibration(fixed_ms=5.0, per_frame_ms=1.0, per_new_frame_ms=0.5)
    prediction = predict(StreamSettings(160, 60, 960), cached)
    assert prediction.cores == pytest.approx((5.0 + 1.0 * 59 + 0.5 * 8) / 160)
    for target in (250, 400):
        s = choose(target, cached, ladder=CACHED_LADDER).settings
        fitting = [c for c in CACHED_LADDER if predict(StreamSettings(*c), cached).p95_ms <= target
                   and predict(StreamSettings(*c), cached).cores <= MAX_CORES]
        assert (s.chunk_ms, s.lookahead_ms, s.context_ms) == fitting[0]


def test_calibrating_a_cached_stream_leaves_it_empty(logmel_bundle):
    encoder = Tokenizer(logmel_bundle, threads=1).cached_encoder()
    calibration = calibrate_cached(encoder, short_frames=10, long_frames=30)
    assert min(calibration.fixed_ms, calibration.per_frame_ms, calibration.per_new_frame_ms) >= 0
    assert len(encoder.cache.frames) == 0 and encoder.counted == 0


def test_a_target_this_device_cannot_reach_says_what_it_can():
    slow = Calibration(fixed_ms=60.0, per_frame_ms=2.0)
    with pytest.raises(SettingsError, match=r"^--latency-ms 150 is below what this device can do with this bundle: "
                                            r"at best chunk/lookahead/context .* ask for --latency-ms \d+ or more$"):
        choose(150, slow)
    with pytest.raises(SettingsError, match="cannot stream this bundle in real time"):
        choose(10_000, Calibration(fixed_ms=500.0, per_frame_ms=50.0))


@pytest.mark.parametrize("value, message", [
    ("0", "--latency-ms must be positive, got 0"),
    ("-5", "--latency-ms must be positive, got -5"),
    ("abc", "--latency-ms must be a number of milliseconds, got 'abc'"),
    ("nan", "--latency-ms must be a number of milliseconds, got 'nan'"),
    ("50", "--latency-ms 50 is below what any stream setting can reach"),
])
def test_bad_targets(value, message):
    with pytest.raises(SettingsError, match="^" + message):
        latency_target(value)


def test_stream_with_a_latency_target(logmel_bundle, speech_16k):
    """latency_ms= gives a stream on one of the ladder's settings (the bundle has a stream entry point:
    CACHED_LADDER's); it cannot be mixed with lengths."""
    tokenizer = Tokenizer(logmel_bundle, threads=1)
    stream = tokenizer.stream(latency_ms=400)
    s = stream.settings
    assert (s.chunk_ms, s.lookahead_ms, s.context_ms) in CACHED_LADDER
    clip = speech_16k[: 2 * RATE]
    units = [c for lo in range(0, len(clip), 555) for c in stream.accept(clip[lo:lo + 555])] + stream.flush()
    assert np.array_equal(np.concatenate([c.units for c in units]), tokenizer.tokenize(clip, sample_rate=RATE))
    with pytest.raises(SettingsError, match="either latency_ms= or the stream's lengths"):
        tokenizer.stream(latency_ms=400, chunk_ms=320)
    with pytest.raises(SettingsError, match=f"^latency_ms {MIN_TARGET_MS - 1:g} is below what any stream setting"):
        tokenizer.stream(latency_ms=MIN_TARGET_MS - 1)
