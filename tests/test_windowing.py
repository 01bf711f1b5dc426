"""Window plans and the streaming windower: every frame once, in order, on the 320-sample grid."""

from __future__ import annotations

import numpy as np
import pytest

from audiotok.runtime.constants import frame_count, samples_for_frames
from audiotok.runtime.errors import SettingsError
from audiotok.runtime.windowing import OFFLINE_POLICY, Windower, WindowPolicy, one_pass_samples, plan_windows


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
        assert w.sample_start % 320 == 0 and w.sample_stop <= n
        assert samples_for_frames(w.stop - w.start) <= 480_080  # at most 30 s and one hop
        # a window the end cuts short runs to the last sample; any other on exactly its frames' samples
        cut_short = w.stop == frame_count(n) and (w.emit_stop == w.stop or w.stop - w.emit_stop < 150)
        assert w.sample_stop == (n if cut_short else w.sample_start + samples_for_frames(w.stop - w.start))
        assert frame_count(w.sample_stop - w.sample_start) == w.stop - w.start
    if windows:
        assert windows[-1].sample_stop == n  # the trailing 0-319 samples reach the encoder
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


@pytest.mark.parametrize("chunk, context, lookahead", [(10, 25, 5), (7, 0, 0), (1, 3, 0), (4, 4, 2), (50, 0, 60)])
@pytest.mark.parametrize("n", [399, 400, 401, 719, 720, 721, 4_479, 4_480, 4_481, 16_399, 16_400, 16_719])
def test_last_window_ends_at_the_input_end_for_any_policy(chunk, context, lookahead, n):
    """Pushed in any blocks, each window runs on the plan's samples, and the window emitting the last
    frame (with every window whose lookahead the end cuts short) runs to the input's last sample."""
    policy = WindowPolicy(chunk_frames=chunk, context_frames=context, lookahead_frames=lookahead)
    plan = plan_windows(policy, n)
    assert [f for w in plan for f in range(w.emit_start, w.emit_stop)] == list(range(frame_count(n)))
    if plan:
        assert plan[-1].sample_stop == n
    for w in plan:
        full_lookahead = w.stop - w.emit_stop == lookahead and w.emit_stop < frame_count(n)
        assert w.sample_stop == (w.sample_start + samples_for_frames(w.stop - w.start) if full_lookahead else n)
    samples = np.arange(n, dtype=np.float64)
    for block in (1, 320, 333, n):
        seen = []

        def units_fn(window_samples, seen=seen):
            seen.append((int(window_samples[0]), len(window_samples)))
            return position_units(window_samples)

        windower = Windower(policy, units_fn)
        pieces = [p for i in range(0, n, block) for p in windower.push(samples[i:i + block])] + windower.finish()
        assert seen == [(w.sample_start, w.sample_stop - w.sample_start) for w in plan]
        assert [int(u) for _, units in pieces for u in units] == list(range(frame_count(n)))


@pytest.mark.parametrize("n", [400, 401, 16_001, 479_999, 480_000])
def test_one_pass_input_runs_on_every_sample(n):
    seen = []
    windower = Windower(OFFLINE_POLICY, lambda x: seen.append(len(x)) or position_units(x))
    windower.push(np.arange(n, dtype=np.float64))
    windower.finish()
    assert seen == [n]


@pytest.mark.parametrize("seconds", [0, -1, 0.02, float("nan"), float("inf"), "30", None, True])
def test_bad_one_pass_lengths_are_refused(seconds):
    with pytest.raises(SettingsError, match="max_pass_seconds"):
        one_pass_samples(seconds)


def test_one_pass_length_in_samples():
    assert one_pass_samples(0.025) == 400
    assert one_pass_samples(150) == 150 * 16_000
