"""Streaming tokenization: samples arrive in blocks, units leave as soon as they are final.

The encoders are non-causal, so a frame's unit depends on audio after it. A stream therefore runs
the bundle on windows of *left context + chunk + lookahead* and keeps only the chunk's frames
(:mod:`windowing` defines those windows on the same 320-sample grid as offline tokenization).
A chunk becomes final once its lookahead has arrived (with no lookahead, once the next frame has:
a window the input's end cuts short waits for flush() and then runs on every sample to the end, as
offline). So a frame's unit comes out after the rest of its chunk, the lookahead and one window's
compute: the chunk's last frame waits lookahead + compute, its first a whole chunk longer
(:mod:`stream_target` predicts the per-frame latency of a setting and chooses one for a target).

Bundles with a stream entry point (manifest ``stream``; :mod:`stream_entry`) compute each CNN frame
once: the window's earlier frames come from a cache (:mod:`stream_cache`), and statistics the
encoder takes over its input (a group-norm CNN's, ``do_normalize``'s) come from everything heard so
far. Where the bundle also has an attention cache, the transformer runs on chunk + lookahead frames
only and attends to the keys and values the context's frames had when they were emitted. Without one, each window is one graph input, normalised by the statistics of its own context +
chunk + lookahead: causal with respect to what has arrived, independent of the block size, and
equal to offline when the window covers the whole input. docs/streaming.md gives the measurements.

Example::

    stream = Tokenizer("units.onnx").stream(chunk_ms=240, lookahead_ms=60, context_ms=1920,
                                            sample_rate=48_000)
    for block in microphone_blocks:          # any size, float or int16, (n,) or (n, channels)
        for piece in stream.accept(block):
            print(piece.frame, piece.units)
    rest = stream.flush()                    # at end of input
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import numpy as np

from .audio.decode import Resampler, check_finite, check_sample_rate, to_mono_float32
from .constants import FRAME_MS, FRAME_SECONDS, HOP_SAMPLES, SAMPLE_RATE, frame_count
from .errors import SettingsError
from .audio.preprocess import CHANNEL_MEAN, padded_length, parse_channel
from .stream_cache import CachedEncoder
from .windowing import UnitsFn, Windower, WindowPolicy


# Defaults, chosen with benchmarks/stream_latency.py on a HuBERT-base-size bundle (docs/streaming.md
# has the tables). With the attention cache (stream_cache.py: each CNN frame computed once, each
# emitted frame's keys and values kept) a window runs the transformer on chunk + lookahead only, so
# a long context costs the attention's dot products alone: DEFAULT_* are for such bundles. 240/60/1920
# agreed with offline units on 96.9% of frames (the old default, 640/80/640 recomputing every window,
# on 95.7%) at 5.6 GMAC per audio second (offline tokenization: 5.5), and a frame waits at most 300 ms
# for audio; 960 ms of context agreed 95.5%, 3840 ms 96.8%.
DEFAULT_CHUNK_MS = 240
DEFAULT_LOOKAHEAD_MS = 60
DEFAULT_CONTEXT_MS = 1920
# With the stream entry point but without the attention cache (WavLM, bundles exported before it,
# or kv_cache=False) the transformer reruns on the whole window: 240/60/960 agreed with offline
# units on 96.0% of frames at 15.2 GMAC per audio second.
CNN_CACHE_DEFAULTS = (240, 60, 960)
# Bundles without a stream entry point (fp16, int8, older exports) recompute every window: there a
# long context costs the CNN too, so their default stays the one chosen for them (95.7%, 10.4 GMAC/s).
RECOMPUTE_DEFAULTS = (640, 80, 640)


def default_lengths(has_stream_entry: bool, kv_cache: bool = False) -> tuple[int, int, int]:
    """(chunk, lookahead, context) ms a stream uses when none are given: ``kv_cache`` when the stream runs
    with the bundle's attention cache."""
    if has_stream_entry and kv_cache:
        return DEFAULT_CHUNK_MS, DEFAULT_LOOKAHEAD_MS, DEFAULT_CONTEXT_MS
    return CNN_CACHE_DEFAULTS if has_stream_entry else RECOMPUTE_DEFAULTS


def _frames(ms: float, name: str, minimum: int) -> int:
    """Milliseconds -> whole frames, refusing values that are negative, too small or off the grid."""
    if isinstance(ms, bool) or not isinstance(ms, Real) or not np.isfinite(ms):
        raise SettingsError(f"{name} must be a number of milliseconds, got {ms!r}")
    if ms < 0:
        raise SettingsError(f"{name} must not be negative, got {ms:g} ms")
    if ms < minimum * FRAME_MS:
        raise SettingsError(f"{name} must be at least {minimum * FRAME_MS} ms (one {HOP_SAMPLES}-sample frame), "
                            f"got {ms:g} ms")
    frames = ms / FRAME_MS
    if abs(frames - round(frames)) > 1e-9:
        low = int(frames) * FRAME_MS
        raise SettingsError(f"{name} {ms:g} ms is not a whole number of {FRAME_MS} ms frames; "
                            f"use {low} or {low + FRAME_MS}")
    return int(round(frames))


@dataclass(frozen=True)
class StreamSettings:
    """Window geometry in milliseconds (multiples of 20 ms) and the rate samples arrive at.

    Checked on construction, so settings that cannot work fail before any audio is read.
    """

    chunk_ms: float = DEFAULT_CHUNK_MS  # frames emitted per window
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS  # audio after the chunk each window sees
    context_ms: float = DEFAULT_CONTEXT_MS  # audio before the chunk each window sees
    sample_rate: int = SAMPLE_RATE  # of the samples passed to accept(); resampled to 16 kHz
    channel: int | str = CHANNEL_MEAN  # of multichannel blocks: "mean" mixes them, an index takes one
    pad_last_frame: bool = False  # at flush, a partial last frame is zero-padded to a full one

    def __post_init__(self) -> None:
        self.policy  # noqa: B018 - validates the three lengths
        parse_channel(self.channel)
        check_sample_rate(self.sample_rate, "sample rate")

    @property
    def policy(self) -> WindowPolicy:
        return WindowPolicy(chunk_frames=_frames(self.chunk_ms, "chunk", 1),
                            context_frames=_frames(self.context_ms, "context", 0),
                            lookahead_frames=_frames(self.lookahead_ms, "lookahead", 0))


@dataclass(frozen=True, eq=False)
class UnitChunk:
    """Units that became final: ``units[i]`` is the unit of global frame ``frame + i``."""

    frame: int  # index of the first frame (frame f covers samples [320 f, 320 f + 400) at 16 kHz)
    units: np.ndarray  # int64

    @property
    def stop(self) -> int:
        """Index one past the last frame."""
        return self.frame + len(self.units)

    @property
    def seconds(self) -> float:
        """Start time of the first frame."""
        return self.frame * FRAME_SECONDS


@dataclass(frozen=True)
class StreamState:
    """A snapshot of where a stream is, for progress displays, tests and latency accounting."""

    samples_accepted: int  # at the input sample rate
    samples_16k: int  # after resampling: what the windows are cut from
    frames_emitted: int  # frames [0, frames_emitted) have been returned
    frames_pending: int  # frames whose audio has arrived but whose window still waits for lookahead
    finished: bool  # flush() was called; reset() before accepting more


class Stream:
    """One live input. ``accept`` blocks of samples, ``flush`` at the end, ``reset`` to start over.

    Not thread-safe: feed it from one thread (a microphone callback should only queue audio).
    """

    def __init__(self, units_fn: UnitsFn, settings: StreamSettings = StreamSettings(), *,
                 cached: CachedEncoder | None = None) -> None:
        """``cached``: run windows through the bundle's stream entry point (:mod:`stream_cache`) instead of
        ``units_fn`` on each window's samples."""
        self.settings = settings
        self.policy = settings.policy
        self._cached = cached
        self._windower = Windower(self.policy, units_fn, cached)
        self.reset()

    def reset(self) -> None:
        """Forget all audio and start a new stream at frame 0 (the resampler starts over too)."""
        self._windower.reset()
        if self._cached is not None:
            self._cached.reset()
        self._resample = Resampler(self.settings.sample_rate)
        self._accepted = 0
        self._finished = False

    @property
    def state(self) -> StreamState:
        samples = self._windower.samples_received
        emitted = self._windower.frames_emitted
        return StreamState(self._accepted, samples, emitted, frame_count(samples) - emitted, self._finished)

    def accept(self, samples: np.ndarray) -> list[UnitChunk]:
        """Take a block (float or integer PCM, ``(n,)`` or ``(n, channels)``); return what became final."""
        if self._finished:
            raise RuntimeError("this stream was flushed; call reset() to start a new one")
        mono = to_mono_float32(samples, source="stream", channel=self.settings.channel)
        check_finite(mono, source="stream", offset=self._accepted, rate=self.settings.sample_rate)
        self._accepted += len(mono)
        return self._chunks(self._windower.push(self._resample(mono)))

    def flush(self) -> list[UnitChunk]:
        """End of input: run the remaining windows (lookahead cut short) and return their units."""
        if self._finished:
            return []
        self._finished = True
        tail = self._resample(np.zeros(0, np.float32), last=True)
        pieces = self._windower.push(tail)
        if self.settings.pad_last_frame and self._windower.samples_received:
            received = self._windower.samples_received
            pieces += self._windower.push(np.zeros(padded_length(received) - received, np.float32))
        return self._chunks(pieces + self._windower.finish())

    @staticmethod
    def _chunks(pieces: list[tuple[int, np.ndarray]]) -> list[UnitChunk]:
        return [UnitChunk(frame, units) for frame, units in pieces if len(units)]
