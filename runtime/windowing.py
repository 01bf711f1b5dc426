"""Cutting a sample stream into encoder windows on the shared 320-sample frame grid.

The encoders are non-causal and (for HuBERT-base) normalise over their whole input, so a frame's
unit depends on the window it was computed in. This module fixes that window as a pure function of
the frame index and the total length, which is what makes long-file tokenization, streaming and
their tests reproducible:

* window ``w`` emits frames ``[w*chunk, min((w+1)*chunk, F))`` and is computed over frames
  ``[max(0, w*chunk - context), min((w+1)*chunk + lookahead, F))``;
* every window starts on a multiple of 320 samples, so its frame ``i`` is global frame
  ``start_frame + i`` and every frame is emitted exactly once, in order;
* a window that the input's end cuts short (its chunk or lookahead reaches past the last frame)
  runs on every sample up to the input's end, the 0-319 samples after the last whole frame
  included: the encoders normalise over their whole input (HuBERT-base's group-norm CNN, the
  ``do_normalize`` waveform statistics), so dropping those samples would move every frame of the
  window a little and flip near-ties. Every other window runs on exactly its frames' samples, so a
  stream can run it as soon as its lookahead arrives;
* inputs no longer than ``one_pass_samples`` run as one window on all their samples: exactly what
  the encoder (and transformers) give for the whole input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import numpy as np

from .constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE, frame_count, samples_for_frames
from .errors import SettingsError


@dataclass(frozen=True)
class WindowPolicy:
    """How many frames each window emits and how much context it sees on either side."""

    chunk_frames: int
    context_frames: int
    lookahead_frames: int
    one_pass_samples: int = 0  # inputs up to this many samples run as a single window

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise SettingsError(f"chunk must be at least one frame ({HOP_SAMPLES} samples), got {self.chunk_frames}")
        if self.context_frames < 0 or self.lookahead_frames < 0 or self.one_pass_samples < 0:
            raise SettingsError("context, lookahead and one-pass length must not be negative")

    @classmethod
    def from_seconds(cls, chunk_s: float, context_s: float, lookahead_s: float,
                     one_pass_s: float = 0.0) -> WindowPolicy:
        def frames(seconds: float, name: str) -> int:
            if seconds < 0:
                raise SettingsError(f"{name} must not be negative, got {seconds}")
            return int(round(seconds * SAMPLE_RATE / HOP_SAMPLES))

        return cls(frames(chunk_s, "chunk"), frames(context_s, "context"), frames(lookahead_s, "lookahead"),
                   int(round(one_pass_s * SAMPLE_RATE)))


# Inputs up to 30 s run in one pass, exactly as the encoder sees a whole utterance. Longer ones run
# in 30 s windows that emit their middle 24 s and see 3 s of context on each side: enough for the
# transformer's effective context, at 1.25x the compute of one pass, in flat memory.
# max_pass_seconds raises the one-pass limit for users who need the reference units of long files
# (attention memory grows with the square of the length: README "Exact units and memory").
DEFAULT_MAX_PASS_SECONDS = 30.0
OFFLINE_POLICY = WindowPolicy(chunk_frames=1200, context_frames=150, lookahead_frames=150,
                              one_pass_samples=int(DEFAULT_MAX_PASS_SECONDS * SAMPLE_RATE))


def one_pass_samples(seconds: object, name: str = "max_pass_seconds") -> int:
    """Seconds of audio to run in one pass -> samples; refuses what is not a number of seconds
    covering at least one frame's 400-sample receptive field."""
    if isinstance(seconds, bool) or not isinstance(seconds, Real) or not math.isfinite(seconds):
        raise SettingsError(f"{name} must be a number of seconds, got {seconds!r}")
    samples = int(round(float(seconds) * SAMPLE_RATE))
    if samples < RECEPTIVE_FIELD_SAMPLES:
        raise SettingsError(f"{name} must be at least {RECEPTIVE_FIELD_SAMPLES / SAMPLE_RATE:g} s "
                            f"(one frame's {RECEPTIVE_FIELD_SAMPLES}-sample receptive field), got {seconds:g}")
    return samples


@dataclass(frozen=True)
class Window:
    """One encoder run on samples ``[sample_start, sample_stop)``: computes frames ``[start, stop)``,
    emits ``[emit_start, emit_stop)``."""

    start: int
    stop: int
    emit_start: int
    emit_stop: int
    sample_stop: int

    @property
    def sample_start(self) -> int:
        return self.start * HOP_SAMPLES


def window_at(policy: WindowPolicy, index: int, n_samples: int | None) -> Window:
    """Window ``index``; ``n_samples`` None means the input is known to extend past the window's lookahead.

    With ``n_samples`` given, a window the input's end cuts short runs to that end (see the module notes).
    """
    emit_start = index * policy.chunk_frames
    emit_stop = emit_start + policy.chunk_frames
    stop = emit_stop + policy.lookahead_frames
    start = max(0, emit_start - policy.context_frames)
    sample_stop = start * HOP_SAMPLES + samples_for_frames(stop - start)
    if n_samples is not None:
        total = frame_count(n_samples)
        if stop > total or emit_stop >= total:
            emit_stop, stop, sample_stop = min(emit_stop, total), min(stop, total), n_samples
    return Window(start, stop, emit_start, emit_stop, sample_stop)


def whole_input(n_samples: int) -> Window:
    """The one window of a one-pass input: every frame, computed on every sample."""
    total = frame_count(n_samples)
    return Window(0, total, 0, total, n_samples)


def plan_windows(policy: WindowPolicy, n_samples: int) -> list[Window]:
    """All windows for an input of ``n_samples`` samples, in order."""
    total = frame_count(n_samples)
    if total == 0:
        return []
    if n_samples <= policy.one_pass_samples:
        return [whole_input(n_samples)]
    count = -(-total // policy.chunk_frames)
    return [window_at(policy, i, n_samples) for i in range(count)]


UnitsFn = Callable[[np.ndarray], np.ndarray]  # 16 kHz samples of one window -> one unit per frame
WindowFn = Callable[["Window", np.ndarray], np.ndarray]  # the same, told which window (stream_cache.py)


class Windower:
    """Runs an encoder over a sample stream window by window, in bounded memory.

    ``push`` takes blocks of any size and returns ``(first_frame, units)`` pieces as soon as the
    windows that emit them have all their samples; ``finish`` runs what is left. It holds at most
    one window's samples (plus the block being pushed), whatever the input length.
    """

    def __init__(self, policy: WindowPolicy, units_fn: UnitsFn, window_fn: WindowFn | None = None) -> None:
        """``window_fn``, when given, computes each window instead of ``units_fn`` (it is told which)."""
        self.policy = policy
        self._units_fn = units_fn
        self._window_fn = window_fn
        self.reset()

    def reset(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # global sample index of self._buffer[0]
        self._received = 0  # samples pushed so far
        self._next_window = 0
        self._windowing = self.policy.one_pass_samples == 0

    @property
    def samples_received(self) -> int:
        return self._received

    @property
    def frames_emitted(self) -> int:
        return min(self._next_window * self.policy.chunk_frames, frame_count(self._received))

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if len(samples):
            self._blocks.append(np.asarray(samples, dtype=np.float32))
            self._received += len(samples)
        if not self._windowing:
            if self._received <= self.policy.one_pass_samples:
                return []
            self._windowing = True
        pieces = []
        while True:
            window = window_at(self.policy, self._next_window, None)
            # Run only once the input is known to go on past the window's lookahead and chunk: a
            # window the end cuts short must wait for finish() to run to the input's end.
            if frame_count(self._received) < max(window.stop, window.emit_stop + 1):
                return pieces
            pieces.append(self._run(window))

    def finish(self) -> list[tuple[int, np.ndarray]]:
        total = frame_count(self._received)
        pieces = []
        if not self._windowing:
            if total:
                pieces.append(self._run(whole_input(self._received)))
            return pieces
        while self._next_window * self.policy.chunk_frames < total:
            pieces.append(self._run(window_at(self.policy, self._next_window, self._received)))
        return pieces

    def _run(self, window: Window) -> tuple[int, np.ndarray]:
        if self._blocks:
            self._buffer = np.concatenate([self._buffer, *self._blocks])
            self._blocks = []
        lo, hi = window.sample_start - self._buffer_start, window.sample_stop - self._buffer_start
        samples = self._buffer[lo:hi]
        units = np.asarray(self._window_fn(window, samples) if self._window_fn else self._units_fn(samples))
        # units of the window's last frames: all of them, or (a window function with an attention
        # cache, stream_cache.py) at least those it emits
        first = window.stop - len(units)
        if not window.start <= first <= window.emit_start or (self._window_fn is None and first != window.start):
            raise RuntimeError(f"encoder gave {len(units)} frames for a window of {window.stop - window.start}")
        self._next_window += 1
        keep_from = max(0, self._next_window * self.policy.chunk_frames - self.policy.context_frames)
        drop = keep_from * HOP_SAMPLES - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        emitted = units[window.emit_start - first: window.emit_stop - first]
        return window.emit_start, emitted


def max_pass_seconds(text: str | float) -> float:
    """``--max-pass-seconds`` as a float, checked here so that a bad value fails before any audio is read."""
    try:
        seconds = float(text)
    except ValueError:
        raise SettingsError(f"--max-pass-seconds must be a number of seconds, got {text!r}") from None
    one_pass_samples(seconds, "--max-pass-seconds")
    return seconds
