"""Window plans and the streaming windower: every frame once, in order, on the 320-sample grid."""

from __future__ import annotations

import numpy as np
import pytest

from audiotok.runtime.constants import frame_count, samples_for_frames
from audiotok.runtime.errors import SettingsError
from audiotok.runtime.tokenizer import OFFLINE_POLICY
from audiotok.runtime.windowing import Windower, WindowPolicy, plan_windows


def position_units(samples: np.ndarray) -> np.ndarray:
    """A fake encoder over samples that hold their own global index: unit = global frame index."""
    n = frame_count(len(samples))
    return (samples[0] // 320 + np.arange(n)).astype(np.int64) if n else np.zeros(0, np.int64)


@pytest.mark.parametrize("n", [0, 399, 400, 719, 720, 16_000, 480_000, 480_001, 496_000, 1_000_000, 2_222_222])
def test_plan_covers_every_frame_once_with_context(n):
    windows = plan_windows(OFFLINE_POLICY, n)
    emitted = [f for w in windows for f in range(w.emit_start, w.emit_stop)]
    assert emitted == list(range(frame_count(n)))
    for w in windows:
        assert w.sample_start % 320 == 0 and w.sample_stop <= max(n, 400)
        assert samples_for_frames(w.stop - w.start) <= 480_080  # at most 30 s and one hop
        if n > 480_000:
            assert w.emit_start - w.start == min(w.emit_start, 150)  # 3 s of left context where there is audio
            assert w.stop - w.emit_stop == min(150, frame_count(n) - w.emit_stop)
    if 400 <= n <= 480_000:
        assert len(windows) == 1


@pytest.mark.parametrize("block", [1, 7, 320, 1_000, 48_000, 10**6])
@pytest.mark.parametrize("n", [399, 400, 16_321, 480_000, 700_001])
def test_windower_matches_the_plan_for_any_block_size(block, n):
    samples = np.arange(n, dtype=np.float64)  # each sample is its own index
    seen_windows = []

    def units_fn(window_samples):
        seen_windows.append((int(window_samples[0]) if len(window_samples) else 0, len(window_samples)))
        return position_units(window_samples)

    windower = Windower(OFFLINE_POLICY, units_fn)
    pieces = [p for i in range(0, n, block) for p in windower.push(samples[i:i + block])] + windower.finish()
    firsts = [first for first, _ in pieces]
    units = np.concatenate([u for _, u in pieces]) if pieces else np.zeros(0)
    assert np.array_equal(units, np.arange(frame_count(n)))
    assert firsts == [w.emit_start for w in plan_windows(OFFLINE_POLICY, n)]
    assert seen_windows == [(w.sample_start, w.sample_stop - w.sample_start) for w in plan_windows(OFFLINE_POLICY, n)]


def test_small_streaming_windows_emit_contiguous_frames():
    policy = WindowPolicy(chunk_frames=10, context_frames=25, lookahead_frames=5)
    n = 50_000
    windower = Windower(policy, position_units)
    samples = np.arange(n, dtype=np.float64)
    got = []
    for i in range(0, n, 777):
        for first, units in windower.push(samples[i:i + 777]):
            assert first == len(got)
            got.extend(units.tolist())
    got.extend(u for _, units in windower.finish() for u in units.tolist())
    assert got == list(range(frame_count(n)))


def test_impossible_policies_are_refused():
    with pytest.raises(SettingsError, match="chunk"):
        WindowPolicy(chunk_frames=0, context_frames=0, lookahead_frames=0)
    with pytest.raises(SettingsError, match="negative"):
        WindowPolicy.from_seconds(0.2, -1.0, 0.1)
