"""Stream settings from a latency target: ``--latency-ms 250`` instead of three window lengths.

What a listener feels is per-frame latency: for every frame, the time from its last sample
arriving to its unit leaving. In a stream of windows (:mod:`stream`) a frame ``j`` frames into
a chunk of ``C`` frames waits for the rest of its chunk and the lookahead ``L``, then for one
window's compute::

    wait(j) = (C - 1 - j + max(L, 1)) x 20 ms + compute(context + C + L)

(with no lookahead a chunk still waits for the frame after it; see :class:`windowing.Windower`).
The waits are arithmetic; the compute is this device's, so it is measured: a short calibration
times the bundle on two window lengths and interpolates (compute is affine in the window's
frames to within a few percent at these lengths: the attention's square term is small below 2 s).
Among :data:`LADDER`'s settings, best agreement with offline first, the first whose predicted
per-frame p95 fits the target and whose compute leaves the core half free is chosen. A target
no setting can reach is refused with what this device can do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import numpy as np

from .constants import FRAME_MS, SAMPLE_RATE, samples_for_frames
from .errors import SettingsError
from .stream import StreamSettings
from .stream_cache import CachedEncoder
from .windowing import Window

# Candidate (chunk, lookahead, context) in ms, in order of preference: agreement with offline
# units on a HuBERT-base-size bundle (random weights, layer 6, k=100, no waveform normalization;
# 20 s of espeak-ng speech, benchmarks/stream_latency.py), highest first. Each step down waits
# less; a setting another beats on agreement, wait and cost together is left out. Agreement
# follows the window's length (the group-norm CNN normalises over the window) more than the
# lookahead: 320/160/640 agreed 92.1%, 320/80/640 92.4%.
LADDER: tuple[tuple[int, int, int], ...] = (
    (640, 160, 960),  # 96.2%
    (640, 80, 640),  # 95.7%, the default
    (480, 80, 800),  # 95.3%
    (400, 80, 880),  # 94.8%
    (320, 80, 640),  # 92.4%
    (240, 120, 480),  # 92.0%
    (240, 80, 640),  # 91.9%
    (240, 80, 480),  # 91.0%
    (200, 100, 400),  # 90.5%
    (200, 80, 480),  # 90.4%
    (160, 80, 480),  # 90.1%
    (160, 80, 320),  # 88.5%
    (160, 60, 320),  # 87.9%
    (120, 60, 240),  # 88.8%
    (100, 40, 200),  # 87.4%
    (80, 40, 160),  # 86.6%
)
# The same for bundles with a stream entry point (stream_cache.py: each CNN frame computed once, a
# group-norm CNN's statistics over everything heard so far). Agreement now follows the context more
# than the window's length: 160/60/640 agreed 92.3%, 160/60/960 95.9%; a window costs the CNN of its
# chunk plus the transformer on the whole window.
CACHED_LADDER: tuple[tuple[int, int, int], ...] = (
    (640, 80, 640),  # 96.5%
    (240, 60, 960),  # 96.0%, the default for bundles with a stream entry point
    (160, 40, 960),  # 96.0%
    (120, 60, 960),  # 95.6%
    (240, 60, 800),  # 94.3%
    (320, 80, 640),  # 94.0%
    (160, 40, 800),  # 94.0%
    (240, 80, 480),  # 92.2%
    (160, 60, 320),  # 90.9%
    (120, 60, 240),  # 90.7%
    (100, 40, 200),  # not measured with the entry point: shorter waits
    (80, 40, 160),
)
# (160/60/960 95.9% and 240/40/960 95.8% are left out: 160/40/960 agrees as well and waits less.)
# The same with the attention cache (stream_cache.py): the transformer runs on chunk + lookahead only,
# so a long context costs the attention's dot products alone; agreement was 96.4-97.2% for every
# setting with 1920 ms of context (960 ms: 95.5%), so the ladder goes by wait, longest first: a
# longer chunk costs less per second of audio (each window reads every weight once).
KV_LADDER: tuple[tuple[int, int, int], ...] = (
    (320, 80, 1920),  # 97.2%
    (240, 60, 1920),  # 96.9%, the default for bundles with an attention cache
    (200, 60, 1920),  # 96.9%
    (160, 40, 1920),  # 96.4%
    (120, 60, 1920),  # 96.5%
    (100, 40, 1920),  # 96.7%
    (80, 40, 1920),  # 96.9%
)
MAX_CORES = 0.5  # a chosen setting computes each chunk in at most half its duration: room for jitter
P95_MARGIN = 1.25  # measured compute is scaled by this in the p95 prediction (a shared or throttled core)
CALIBRATION_RUNS = 3  # per window length; the median is kept
MAX_TARGET_MS = 60_000.0

WindowRunner = Callable[[np.ndarray], object]  # runs the bundle on one window of 16 kHz samples


def latency_target(value: object, name: str = "--latency-ms") -> float:
    """``value`` as milliseconds when it is a number any setting could reach with free compute; a
    SettingsError otherwise (before any bundle or audio is opened)."""
    try:
        ms = float(value) if isinstance(value, str) else value
    except ValueError:
        raise SettingsError(f"{name} must be a number of milliseconds, got {value!r}") from None
    if isinstance(ms, bool) or not isinstance(ms, Real) or not math.isfinite(ms):
        raise SettingsError(f"{name} must be a number of milliseconds, got {value!r}")
    if ms <= 0:
        raise SettingsError(f"{name} must be positive, got {ms:g}")
    if ms < MIN_TARGET_MS:
        raise SettingsError(f"{name} {ms:g} is below what any stream setting can reach: the shortest "
                            f"({_spec(LADDER[-1])}) waits {MIN_TARGET_MS:.0f} ms per frame (p95) before any compute")
    if ms > MAX_TARGET_MS:
        raise SettingsError(f"{name} must be at most {MAX_TARGET_MS:g}, got {ms:g}")
    return float(ms)


def _spec(setting: tuple[float, float, float]) -> str:
    return "chunk/lookahead/context {:g}/{:g}/{:g} ms".format(*setting)


def frame_waits_ms(chunk_ms: float, lookahead_ms: float) -> np.ndarray:
    """Each frame position's wait for audio after its own (ms), first frame of the chunk first."""
    chunk, lookahead = round(chunk_ms / FRAME_MS), round(lookahead_ms / FRAME_MS)
    return (chunk - 1 - np.arange(chunk) + max(lookahead, 1)) * float(FRAME_MS)


MIN_TARGET_MS = float(min(np.percentile(frame_waits_ms(*ladder[-1][:2]), 95)  # the shortest setting, free compute
                          for ladder in (LADDER, CACHED_LADDER, KV_LADDER)))


@dataclass(frozen=True)
class Calibration:
    """This device's compute for one window: ``fixed_ms + per_frame_ms x frames + per_new_frame_ms x new``
    (one thread). ``new`` frames are those a cached stream computes the CNN of (the chunk's); a stream that
    recomputes every window has ``per_new_frame_ms`` 0 and the CNN inside ``per_frame_ms``."""

    fixed_ms: float
    per_frame_ms: float
    per_new_frame_ms: float = 0.0
    attention_cache: bool = False  # the transformer runs on chunk + lookahead frames, not the whole window

    def window_ms(self, frames: int, new_frames: int = 0) -> float:
        return self.fixed_ms + self.per_frame_ms * frames + self.per_new_frame_ms * new_frames


def calibrate(run_window: WindowRunner, short_frames: int = 20, long_frames: int = 90) -> Calibration:
    """Time the bundle on windows of two lengths (median of a few runs after one warm-up each)."""
    rng = np.random.default_rng(0)
    times = []
    for frames in (short_frames, long_frames):
        samples = (0.1 * rng.standard_normal(samples_for_frames(frames))).astype(np.float32)
        run_window(samples)  # warm-up: allocations and kernel choices for this shape
        runs = []
        for _ in range(CALIBRATION_RUNS):
            started = time.perf_counter()
            run_window(samples)
            runs.append((time.perf_counter() - started) * 1000)
        times.append(float(np.median(runs)))
    per_frame = max(times[1] - times[0], 0.0) / (long_frames - short_frames)
    return Calibration(max(times[0] - per_frame * short_frames, 0.0), per_frame)


def _median_ms(run: Callable[[], object], prepare: Callable[[], object]) -> float:
    prepare()
    run()  # warm-up: allocations and kernel choices for this shape
    runs = []
    for _ in range(CALIBRATION_RUNS):
        prepare()
        started = time.perf_counter()
        run()
        runs.append((time.perf_counter() - started) * 1000)
    return float(np.median(runs))


def calibrate_cached(encoder: CachedEncoder, short_frames: int = 20, long_frames: int = 90,
                     few_new: int = 4) -> Calibration:
    """Time a cached stream's windows (stream_cache.py): all frames new at two lengths, and the long
    window with only ``few_new`` new frames, which separates the CNN's cost per new frame from the rest."""
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(samples_for_frames(long_frames))).astype(np.float32)

    def window(frames: int) -> Window:
        return Window(0, frames, 0, frames, samples_for_frames(frames))

    def timed(frames: int, new: int) -> float:
        def prepare() -> None:
            encoder.reset()
            if new < frames:
                encoder(window(frames - new), samples[:samples_for_frames(frames - new)])

        return _median_ms(lambda: encoder(window(frames), samples[:samples_for_frames(frames)]), prepare)

    return _fit(encoder, timed, short_frames, long_frames, few_new, attention_cache=False)


def calibrate_kv(encoder: CachedEncoder, short_frames: int = 8, long_frames: int = 40, few_new: int = 2) -> Calibration:
    """Time windows with the attention cache (stream_cache.py): ``frames`` computed frames after a cached
    context as long as the positional convolution's reach, all of them new to the CNN at two lengths,
    and the long one with only ``few_new`` new, which separates the CNN's cost per new frame."""
    reach = max(encoder.entry.kv.reach, 1)
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(samples_for_frames(reach + long_frames))).astype(np.float32)

    def timed(frames: int, new: int) -> float:
        stop = reach + frames

        def prepare() -> None:  # the context's CNN frames and keys, and the frames not new this time
            encoder.reset()
            encoder(Window(0, stop - new, 0, reach, samples_for_frames(stop - new)),
                    samples[:samples_for_frames(stop - new)])

        window = Window(0, stop, reach, stop, samples_for_frames(stop))
        return _median_ms(lambda: encoder(window, samples[:samples_for_frames(stop)]), prepare)

    return _fit(encoder, timed, short_frames, long_frames, few_new, attention_cache=True)


def _fit(encoder: CachedEncoder, timed: Callable[[int, int], float], short_frames: int, long_frames: int,
         few_new: int, *, attention_cache: bool) -> Calibration:
    """A cached stream's calibration from ``timed(frames, new)`` at (short, all new), (long, all new) and
    (long, ``few_new`` new): the CNN's cost per new frame, the rest per computed frame, and what is fixed."""
    try:
        short, long, few = timed(short_frames, short_frames), timed(long_frames, long_frames), timed(long_frames, few_new)
    finally:
        encoder.reset()
    per_new = max(long - few, 0.0) / (long_frames - few_new)
    per_frame = max((long - short) / (long_frames - short_frames) - per_new, 0.0)
    return Calibration(max(short - (per_frame + per_new) * short_frames, 0.0), per_frame, per_new, attention_cache)


@dataclass(frozen=True)
class Prediction:
    """What a setting gives on a calibrated device: per-frame latency and the share of a core."""

    settings: StreamSettings
    p50_ms: float
    p95_ms: float
    cores: float

    def describe(self) -> str:
        s = self.settings
        return (f"{_spec((s.chunk_ms, s.lookahead_ms, s.context_ms))}: per-frame p95 ~{self.p95_ms:.0f} ms, "
                f"p50 ~{self.p50_ms:.0f} ms, {self.cores:.2f} of a core")


def predict(settings: StreamSettings, calibration: Calibration) -> Prediction:
    policy = settings.policy
    frames = policy.chunk_frames + policy.lookahead_frames
    if not calibration.attention_cache:
        frames += policy.context_frames
    compute = calibration.window_ms(frames, policy.chunk_frames)
    waits = frame_waits_ms(settings.chunk_ms, settings.lookahead_ms)
    return Prediction(settings, float(np.percentile(waits, 50)) + compute,
                      float(np.percentile(waits, 95)) + compute * P95_MARGIN, compute / settings.chunk_ms)


def choose(latency_ms: float, calibration: Calibration, sample_rate: int = SAMPLE_RATE,
           ladder: tuple[tuple[int, int, int], ...] = LADDER) -> Prediction:
    """The first ``ladder`` setting (:data:`LADDER`, :data:`CACHED_LADDER` for a bundle with a stream
    entry point, :data:`KV_LADDER` with its attention cache) predicted to keep per-frame p95 within ``latency_ms`` at most :data:`MAX_CORES`; a
    SettingsError saying what this device can do when none is."""
    predictions = [predict(StreamSettings(*setting, sample_rate=sample_rate), calibration) for setting in ladder]
    affordable = [p for p in predictions if p.cores <= MAX_CORES]
    for prediction in affordable:
        if prediction.p95_ms <= latency_ms:
            return prediction
    if not affordable:
        cheapest = min(predictions, key=lambda p: p.cores)
        raise SettingsError(f"--latency-ms {latency_ms:g}: this device cannot stream this bundle in real time with "
                            f"room to spare: even {cheapest.describe()}")
    best = min(affordable, key=lambda p: p.p95_ms)
    raise SettingsError(f"--latency-ms {latency_ms:g} is below what this device can do with this bundle: at best "
                        f"{best.describe()}; ask for --latency-ms {math.ceil(best.p95_ms / 10) * 10} or more")
