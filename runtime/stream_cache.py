"""A stream through the bundle's stream entry point: each CNN frame computed once, then cached.

:class:`FrameCache` holds the CNN frames of the current window (at most context + chunk +
lookahead frames, whatever the stream's length). :class:`CachedEncoder` runs one window: it feeds
the graph only the samples of frames not cached yet (at least the window's last frame), the cached
frames before them, and the running statistics, and keeps the new frames and statistics the graph
returns. The window geometry stays :mod:`windowing`'s, so frames are emitted exactly once, in order,
and flush works as without the cache. What each output may be is checked before it is used: a
bundle from a stranger fails with its name.

With the bundle's attention cache (manifest ``stream.kv``) and ``kv_cache`` on, the transformer runs
on the chunk + lookahead frames only: :class:`KvCache` holds each layer's keys and values of the
emitted frames of the last ``context`` frames, which the new frames attend to, and the positional
convolution reads up to ``kv.reach`` cached CNN frames before them. A window then returns the units
of its chunk + lookahead frames (the windowing takes a window's last frames, at least those it emits).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, samples_for_frames
from .errors import BundleError
from .bundle.session import INPUT_NAME, OUTPUT_NAME
from .bundle.stream_entry import (CACHE, CNN_STATS, CNN_STATS_OUT, CONTEXT, FRAMES, KV, KV_OUT, ON, SKIP, STATS_ROWS,
                                  WAVE_STATS, WAVE_STATS_OUT, StreamEntry)
from .windowing import Window

GraphRun = Callable[[list[str], dict[str, np.ndarray]], list[np.ndarray]]  # session.run, with its error handling
UnitsCheck = Callable[[np.ndarray, int], np.ndarray]  # (graph output, samples) -> checked units


class FrameCache:
    """CNN frames ``[start, stop)`` of the stream, ``frame_dim`` channels each."""

    def __init__(self, frame_dim: int) -> None:
        self.frame_dim = frame_dim
        self.start = 0
        self.frames = np.zeros((0, frame_dim), np.float32)

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)

    def between(self, start: int, stop: int) -> np.ndarray:
        return self.frames[start - self.start: stop - self.start]

    def extend(self, first: int, frames: np.ndarray) -> None:
        """Frames from global index ``first`` on; those already held are kept as they are."""
        new = frames[self.stop - first:]
        if len(new):
            self.frames = np.concatenate([self.frames, new])

    def keep_from(self, start: int) -> None:
        """Forget frames before ``start`` (a copy, so the dropped ones are freed)."""
        if start > self.start:
            self.frames = self.frames[start - self.start:].copy()
            self.start = start


class KvCache:
    """Each layer's attention keys and values of frames ``[start, stop)``: ``[layers, 2, frames, dim]``."""

    def __init__(self, layers: int, dim: int) -> None:
        self.start = 0
        self.rows = np.zeros((layers, 2, 0, dim), np.float32)

    @property
    def stop(self) -> int:
        return self.start + self.rows.shape[2]

    def between(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.rows[:, :, max(start, self.start) - self.start: stop - self.start])

    def append(self, first: int, rows: np.ndarray) -> None:
        """Rows of frames from ``first`` on; those already held are kept as they are."""
        new = rows[:, :, self.stop - first:]
        if new.shape[2]:
            self.rows = np.concatenate([self.rows, new], axis=2)

    def keep_from(self, start: int) -> None:
        if start > self.start:
            self.rows = self.rows[:, :, start - self.start:].copy()
            self.start = start


class CachedEncoder:
    """Windows of a stream, computed through the stream entry point with cached frames (and, where the
    bundle has one and ``kv_cache`` is on, the attention cache)."""

    def __init__(self, entry: StreamEntry, run: GraphRun, check_units: UnitsCheck, source: str, *,
                 kv_cache: bool = True) -> None:
        self.entry = entry
        self.uses_kv = kv_cache and entry.kv is not None
        self._run = run
        self._check_units = check_units
        self._source = source
        self.reset()

    def reset(self) -> None:
        self.cache = FrameCache(self.entry.frame_dim)
        self.kv = KvCache(self.entry.kv.layers, self.entry.kv.dim) if self.uses_kv else None
        self.counted = 0  # samples [0, counted) are in the running statistics
        self.cnn_stats = np.zeros((STATS_ROWS, self.entry.stats_channels), np.float64)
        self.wave_stats = np.zeros((STATS_ROWS, 1), np.float64)

    def __call__(self, window: Window, samples: np.ndarray) -> np.ndarray:
        """Units of frames ``[first, window.stop)``: ``first`` is ``window.start``, or with the attention cache
        ``window.emit_start`` (the earlier frames' keys and values are cached); ``samples`` are the window's,
        from its first frame."""
        start, stop = window.start, window.stop
        if start < self.cache.start or start > self.cache.stop:
            raise RuntimeError(f"window [{start}, {stop}) does not follow the cache [{self.cache.start}, "
                               f"{self.cache.stop})")
        first = window.emit_start if self.kv is not None else start  # the first frame given a unit
        first_new = max(first, min(self.cache.stop, stop - 1))  # the graph computes at least one frame
        segment = samples[(first_new - start) * HOP_SAMPLES:]
        skip = max(0, self.counted - first_new * HOP_SAMPLES)
        if skip > RECEPTIVE_FIELD_SAMPLES + HOP_SAMPLES:  # what the graph's statistics can leave out
            raise RuntimeError(f"{skip} samples already counted at the start of a stream call")
        feeds = {INPUT_NAME: np.ascontiguousarray(segment, np.float32)[None],
                 CACHE: np.ascontiguousarray(self.cache.between(first, first_new))[None], ON: np.array(True),
                 SKIP: np.array(skip, np.int64),
                 CNN_STATS: self.cnn_stats, WAVE_STATS: self.wave_stats}
        if self.kv is not None:
            reach_from = max(start, first - self.entry.kv.reach)
            feeds[CONTEXT] = np.ascontiguousarray(self.cache.between(reach_from, first))[None]
            if self.kv.start > start or self.kv.stop != first:
                raise RuntimeError(f"window [{start}, {stop}) does not follow the attention cache "
                                   f"[{self.kv.start}, {self.kv.stop})")
            feeds[KV] = self.kv.between(start, first)
        outputs = self._run([OUTPUT_NAME, *self.entry.outputs], feeds)
        units, frames, cnn_stats, wave_stats = outputs[:4]
        units = self._check_units(units, samples_for_frames(stop - first))
        self._check_outputs(frames, stop - first_new, cnn_stats, wave_stats)
        if self.kv is not None:
            kv_rows = self._checked_kv(outputs[4], stop - first)
            self.kv.append(first, kv_rows[:, :, :window.emit_stop - first])  # emitted frames' only
            self.kv.keep_from(start)
        self.cache.extend(first_new, frames[0])
        self.cache.keep_from(start)
        self.counted = max(self.counted, start * HOP_SAMPLES + len(samples))
        self.cnn_stats, self.wave_stats = cnn_stats, wave_stats
        return units

    def _checked_kv(self, value: np.ndarray, frames: int) -> np.ndarray:
        value = np.asarray(value)
        shape = (self.entry.kv.layers, 2, frames, self.entry.kv.dim)
        if value.dtype != np.float32 or value.shape != shape:
            raise BundleError(f"{self._source}: the stream entry's {KV_OUT} output is {value.dtype} "
                              f"{list(value.shape)}, not float32 {list(shape)}")
        return value

    def _check_outputs(self, frames: np.ndarray, new: int, cnn_stats: np.ndarray, wave_stats: np.ndarray) -> None:
        expected = {FRAMES: (frames, np.float32, (1, new, self.entry.frame_dim)),
                    CNN_STATS_OUT: (cnn_stats, np.float64, self.cnn_stats.shape),
                    WAVE_STATS_OUT: (wave_stats, np.float64, self.wave_stats.shape)}
        for name, (value, dtype, shape) in expected.items():
            value = np.asarray(value)
            if value.dtype != dtype or value.shape != shape:
                raise BundleError(f"{self._source}: the stream entry's {name} output is {value.dtype} "
                                  f"{list(value.shape)}, not {np.dtype(dtype)} {list(shape)}")


def check_stream_signature(session, entry: StreamEntry, source: str) -> None:
    """The graph must have the stream inputs (with defaults, so the offline call can omit them) and
    outputs the manifest's ``stream`` entry promises; a BundleError naming the first one missing."""
    optional = {arg.name for arg in session.get_overridable_initializers()}
    outputs = {arg.name for arg in session.get_outputs()}
    for name in entry.inputs:
        if name not in optional:
            raise BundleError(f"{source}: its manifest has a stream entry, but the graph has no optional input "
                              f"'{name}'")
    for name in entry.outputs:
        if name not in outputs:
            raise BundleError(f"{source}: its manifest has a stream entry, but the graph has no output '{name}'")
