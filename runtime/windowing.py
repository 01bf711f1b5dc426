"""Cutting a sample stream into encoder windows on the shared 320-sample frame grid.

The encoders are non-causal and (for HuBERT-base) normalise over their whole input, so a frame's
unit depends on the window it was computed in. This module fixes that window as a pure function of
the frame index and the total length, which is what makes long-file tokenization, streaming and
their tests reproducible:

* window ``w`` emits frames ``[w*chunk, min((w+1)*chunk, F))`` and is computed over frames
  ``[max(0, w*chunk - context), min((w+1)*chunk + lookahead, F))``;
* every window starts on a multiple of 320 samples, so its frame ``i`` is global frame
  ``start_frame + i`` and every frame is emitted exactly once, in order;
* inputs no longer than ``one_pass_samples`` run as one window (exactly what the encoder gives
  for the whole input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .constants import HOP_SAMPLES, SAMPLE_RATE, frame_count, samples_for_frames
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


@dataclass(frozen=True)
class Window:
    """One encoder run: computes frames ``[start, stop)``, emits ``[emit_start, emit_stop)``."""

    start: int
    stop: int
    emit_start: int
    emit_stop: int

    @property
    def sample_start(self) -> int:
        return self.start * HOP_SAMPLES

    @property
    def sample_stop(self) -> int:
        return self.sample_start + samples_for_frames(self.stop - self.start)


def window_at(policy: WindowPolicy, index: int, total_frames: int | None) -> Window:
    """Window ``index``; ``total_frames`` None means the input is known to extend past it."""
    emit_start = index * policy.chunk_frames
    emit_stop = emit_start + policy.chunk_frames
    stop = emit_stop + policy.lookahead_frames
    if total_frames is not None:
        emit_stop, stop = min(emit_stop, total_frames), min(stop, total_frames)
    return Window(max(0, emit_start - policy.context_frames), stop, emit_start, emit_stop)


def plan_windows(policy: WindowPolicy, n_samples: int) -> list[Window]:
    """All windows for an input of ``n_samples`` samples, in order."""
    total = frame_count(n_samples)
    if total == 0:
        return []
    if n_samples <= policy.one_pass_samples:
        return [Window(0, total, 0, total)]
    count = -(-total // policy.chunk_frames)
    return [window_at(policy, i, total) for i in range(count)]


UnitsFn = Callable[[np.ndarray], np.ndarray]  # 16 kHz samples of one window -> one unit per frame


class Windower:
    """Runs an encoder over a sample stream window by window, in bounded memory.

    ``push`` takes blocks of any size and returns ``(first_frame, units)`` pieces as soon as the
    windows that emit them have all their samples; ``finish`` runs what is left. It holds at most
    one window's samples (plus the block being pushed), whatever the input length.
    """

    def __init__(self, policy: WindowPolicy, units_fn: UnitsFn) -> None:
        self.policy = policy
        self._units_fn = units_fn
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
            if frame_count(self._received) < window.stop:
                return pieces
            pieces.append(self._run(window))

    def finish(self) -> list[tuple[int, np.ndarray]]:
        total = frame_count(self._received)
        pieces = []
        if not self._windowing:
            if total:
                pieces.append(self._run(Window(0, total, 0, total)))
            return pieces
        while self._next_window * self.policy.chunk_frames < total:
            pieces.append(self._run(window_at(self.policy, self._next_window, total)))
        return pieces

    def _run(self, window: Window) -> tuple[int, np.ndarray]:
        if self._blocks:
            self._buffer = np.concatenate([self._buffer, *self._blocks])
            self._blocks = []
        lo, hi = window.sample_start - self._buffer_start, window.sample_stop - self._buffer_start
        units = np.asarray(self._units_fn(self._buffer[lo:hi]))
        if len(units) != window.stop - window.start:
            raise RuntimeError(f"encoder gave {len(units)} frames for a window of {window.stop - window.start}")
        self._next_window += 1
        keep_from = max(0, self._next_window * self.policy.chunk_frames - self.policy.context_frames)
        drop = keep_from * HOP_SAMPLES - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        emitted = units[window.emit_start - window.start: window.emit_stop - window.start]
        return window.emit_start, emitted
