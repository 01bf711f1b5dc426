"""Audio in: decode, mix to mono, resample to 16 kHz, in bounded memory.

Everything the tokenizer sees goes through :func:`file_blocks` or :func:`array_blocks`, so a file
and the same samples passed as an array give the same units. Files are read in blocks and
resampled with soxr's streaming resampler, which keeps memory flat for hour-long inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .constants import SAMPLE_RATE
from .errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
READ_BLOCK_SECONDS = 10.0  # decode this much at a time: large enough to be fast, small enough to stay flat


def to_mono_float32(samples: np.ndarray, *, source: str = "samples") -> np.ndarray:
    """Mix ``(n,)`` or ``(n, channels)`` float or integer PCM to mono float32 in [-1, 1]."""
    arr = np.asarray(samples)
    if arr.ndim not in (1, 2):
        raise AudioError(f"{source}: expected samples shaped (n,) or (n, channels), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        scale = float(2 ** (8 * arr.dtype.itemsize - 1))
        offset = scale if np.issubdtype(arr.dtype, np.unsignedinteger) else 0.0
        arr = (arr.astype(np.float64) - offset) / scale
    elif not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{source}: samples must be float or integer PCM, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr.mean(axis=1) if arr.shape[1] > 1 else arr[:, 0]
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_finite(block: np.ndarray, *, source: str, offset: int, rate: int) -> None:
    """Refuse NaN/Inf: they would silently turn every later frame into the same unit."""
    if not np.isfinite(block).all():
        first = int(np.flatnonzero(~np.isfinite(block))[0]) + offset
        raise AudioError(f"{source}: NaN or Inf sample at {first / rate:.3f} s")


class Resampler:
    """soxr's streaming resampler to 16 kHz; a pass-through when the rate already matches."""

    def __init__(self, in_rate: int) -> None:
        if in_rate <= 0:
            raise AudioError(f"sample rate must be positive, got {in_rate}")
        self.in_rate = int(in_rate)
        self._stream = (
            None if self.in_rate == SAMPLE_RATE
            else soxr.ResampleStream(self.in_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )

    def __call__(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block, last=last)


def array_blocks(samples: np.ndarray, sample_rate: int, *, source: str = "samples",
                 block_samples: int | None = None) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks from an in-memory array."""
    mono = to_mono_float32(samples, source=source)
    check_finite(mono, source=source, offset=0, rate=sample_rate)
    resample = Resampler(sample_rate)
    step = block_samples or int(READ_BLOCK_SECONDS * sample_rate)
    for start in range(0, len(mono), step):
        yield resample(mono[start:start + step])
    yield resample(np.zeros(0, np.float32), last=True)


def open_audio(path: str | os.PathLike) -> sf.SoundFile:
    """Open an audio file, turning every way it can fail into one clear :class:`AudioError`."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not an audio file")
    try:
        return sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = str(exc).split("\n")[0].split(": ", 1)[-1] or "unknown format"
        raise AudioError(f"{p}: not a readable audio file ({reason})") from None


def decoded_blocks(f: sf.SoundFile, *, source: str,
                   block_seconds: float = READ_BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of an open file at its own sample rate (no resampling).

    Streaming reads files through this with short blocks and resamples as a microphone would;
    :func:`file_blocks` reads through it with long ones.
    """
    step = max(1, int(block_seconds * f.samplerate))
    offset = 0
    try:
        for block in f.blocks(blocksize=step, dtype="float32", always_2d=True):
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            check_finite(mono, source=source, offset=offset, rate=f.samplerate)
            offset += len(mono)
            yield np.ascontiguousarray(mono)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{source}: decoding failed after {offset / f.samplerate:.2f} s ({exc})") from None


def file_blocks(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks decoded from an audio file."""
    with open_audio(path) as f:
        resample = Resampler(f.samplerate)
        for block in decoded_blocks(f, source=str(path)):
            yield resample(block)
        yield resample(np.zeros(0, np.float32), last=True)


def find_audio_files(paths: list[str]) -> list[Path]:
    """Expand files and folders (recursively, by extension) into a sorted, de-duplicated list."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS))
        elif p.exists():
            found.append(p)
        else:
            raise AudioError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
