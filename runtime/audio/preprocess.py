"""Processor options between decoding and the encoder: which channel, silence trim, last-frame padding.

audioTokenizer (mHuBERT-147 + k-means) prepares audio differently from audiotok's defaults, and a
vocabulary only gives the same units when its audio is prepared the way it was trained on:

* ``channel``: ``"mean"`` mixes every channel (audiotok's default); an index takes that channel
  alone (audioTokenizer takes channel 0).
* ``trim_db``: leading and trailing silence removed as ``librosa.effects.trim(y, top_db=trim_db)``
  does at 16 kHz (RMS over 2048-sample frames every 512 samples, zero-padded at both ends; a frame
  is silent when it is ``trim_db`` dB or more below the loudest one). Needs the whole input, so a
  file is read twice rather than held in memory. ``None`` or 0: no trim.
* ``pad_last_frame``: a partial last frame is zero-padded to a full one (frame rule ``"pad"``):
  the input grows to the next length ``n`` with ``(n - 400) % 320 == 0``, audioTokenizer's rule,
  so most inputs get one frame more than the ``"floor"`` rule's ``(n - 400) // 320 + 1``.

Everything the runtime and the trainer read goes through :func:`prepared_blocks`, so offline,
corpus and training runs apply the options in one place (a stream pads at ``flush``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from ..constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES
from ..errors import SettingsError

CHANNEL_MEAN = "mean"
FRAME_RULES = ("floor", "pad")  # floor: whole frames only; pad: a partial last frame padded with zeros
FEATURE_NORMS = ("none", "l2")  # l2: features scaled to unit length before the nearest-centroid search

FRAME_COUNT_RULE = {
    "floor": "frame rule floor: n samples at 16 kHz give (n - 400) // 320 + 1 units (0 below 400)",
    "pad": "frame rule pad: a partial last frame is zero-padded to a full one, so n samples at 16 kHz give "
           "(n - 80 + 319) // 320 units (0 up to 80), one more than (n - 400) // 320 + 1 unless (n - 400) % 320 == 0",
}
TRIM_FRAME_SAMPLES = 2048  # librosa.effects.trim's frame_length
TRIM_HOP_SAMPLES = 512  # librosa.effects.trim's hop_length
TRIM_AMIN_POWER = 1e-10  # librosa's amplitude_to_db amin (1e-5) squared


def parse_channel(value: object, *, option: str = "--channel") -> int | str:
    """``"mean"`` or a channel index >= 0 (from the command line, a sidecar or a manifest)."""
    if isinstance(value, str) and value == CHANNEL_MEAN:  # a str first: an array's == is elementwise
        return CHANNEL_MEAN
    if isinstance(value, bool):
        raise SettingsError(f"{option} must be 'mean' or a channel number (0 is the first), got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise SettingsError(f"{option} must be 'mean' or a channel number (0 is the first), "
                                f"got {value!r}") from None
    if not isinstance(value, Integral) or value < 0:  # Integral: a numpy int is a channel number too
        raise SettingsError(f"{option} must be 'mean' or a channel number (0 is the first), got {value!r}")
    return int(value)


def parse_trim_db(value: object, *, option: str = "--trim-silence") -> float | None:
    """A non-negative finite number of dB (0: no trim), or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SettingsError(f"{option} must be a number of dB >= 0, got {value!r}")
    try:
        db = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{option} must be a number of dB >= 0 (e.g. 30), got {value!r}") from None
    if not math.isfinite(db) or db < 0:
        raise SettingsError(f"{option} must be a number of dB >= 0 (e.g. 30), got {value!r}")
    return db or None


def check_choice(value: object, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise SettingsError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocess:
    """How audio is prepared before the encoder; the defaults are audiotok's (mean, no trim, floor)."""

    channel: int | str = CHANNEL_MEAN
    trim_db: float | None = None
    pad_last_frame: bool = False

    def __post_init__(self) -> None:
        parse_channel(self.channel)
        parse_trim_db(self.trim_db)

    @property
    def frame_rule(self) -> str:
        return "pad" if self.pad_last_frame else "floor"


def padded_length(n_samples: int) -> int:
    """The length a ``"pad"`` input is zero-padded to: the least ``n >= n_samples`` with ``(n - 400) % 320 == 0``."""
    return n_samples + (-(n_samples - RECEPTIVE_FIELD_SAMPLES)) % HOP_SAMPLES


def _block_energies(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """Sum of squares of each 512-sample block of the input (the last one partial), and the length."""
    sums: list[float] = []
    carry = np.zeros(0, np.float64)
    n = 0
    for block in blocks:
        n += len(block)
        data = np.concatenate([carry, np.asarray(block, np.float64)])
        whole = len(data) // TRIM_HOP_SAMPLES * TRIM_HOP_SAMPLES
        if whole:
            sums.extend(np.square(data[:whole]).reshape(-1, TRIM_HOP_SAMPLES).sum(axis=1).tolist())
        carry = data[whole:]
    if len(carry):
        sums.append(float(np.square(carry).sum()))
    return np.asarray(sums, np.float64), n


def trim_bounds(blocks: Iterable[np.ndarray], top_db: float) -> tuple[int, int]:
    """``[start, stop)`` of the input that ``librosa.effects.trim(y, top_db=top_db)`` keeps.

    Frame ``t`` covers samples ``[512 t - 1024, 512 t + 1024)`` (zeros outside the input), i.e. the
    four 512-sample blocks ``t - 2 .. t + 1``; there are ``1 + n // 512`` frames. Reads the blocks once.
    """
    energies, n = _block_energies(blocks)
    if n == 0:
        return 0, 0
    frames = 1 + n // TRIM_HOP_SAMPLES
    padded = np.concatenate([np.zeros(2), energies, np.zeros(frames + 2 - len(energies))])
    power = (padded[0:frames] + padded[1:frames + 1] + padded[2:frames + 2] + padded[3:frames + 3])
    power /= TRIM_FRAME_SAMPLES
    db = 10.0 * np.log10(np.maximum(TRIM_AMIN_POWER, power))
    db -= 10.0 * np.log10(max(TRIM_AMIN_POWER, float(power.max())))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]) * TRIM_HOP_SAMPLES, min(n, (int(loud[-1]) + 1) * TRIM_HOP_SAMPLES)


def _between(blocks: Iterable[np.ndarray], start: int, stop: int | None) -> Iterator[np.ndarray]:
    """The samples ``[start, stop)`` of a block stream, as blocks."""
    offset = 0
    for block in blocks:
        lo, hi = offset, offset + len(block)
        offset = hi
        a, b = max(lo, start), hi if stop is None else min(hi, stop)
        if b > a:
            yield block[a - lo:b - lo]
        elif lo == hi:
            yield block  # empty blocks (a resampler's flush) keep their place
        if stop is not None and offset >= stop:
            return


def _padded(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The blocks, then the zeros that bring their total length onto the ``"pad"`` frame grid."""
    n = 0
    for block in blocks:
        n += len(block)
        yield block
    if n:
        yield np.zeros(padded_length(n) - n, np.float32)


def prepared_blocks(open_blocks: Callable[[], Iterator[np.ndarray]], pre: Preprocess) -> tuple[int, Iterator[np.ndarray]]:
    """16 kHz blocks after trim and padding, and the trim's first kept sample (0 without trim).

    ``open_blocks`` gives the decoded, channel-selected 16 kHz blocks from the start each time it is
    called: trimming reads the input once to find its bounds and once more to yield them.
    """
    start, stop = 0, None
    if pre.trim_db:
        start, stop = trim_bounds(open_blocks(), pre.trim_db)
    blocks: Iterator[np.ndarray] = open_blocks() if stop is None else _between(open_blocks(), start, stop)
    if pre.pad_last_frame:
        blocks = _padded(blocks)
    return start, blocks
