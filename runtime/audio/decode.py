"""Audio in: decode, mix to mono, resample to 16 kHz, in bounded memory.

Everything the tokenizer sees goes through :func:`file_blocks` or :func:`array_blocks`, so a file
and the same samples passed as an array give the same units. Files are read in blocks and
resampled with soxr's streaming resampler, which keeps memory flat for hour-long inputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from numbers import Integral, Real

import numpy as np
import soundfile as sf
import soxr

from ..constants import SAMPLE_RATE
from ..errors import AudioError, SamplesError
from .preprocess import CHANNEL_MEAN
from .file_kind import PIPED_AUDIO_HINT, require_regular_file
from ..process.native_stderr import Captured, captured_stderr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
READ_BLOCK_SECONDS = 10.0  # decode this much at a time: large enough to be fast, small enough to stay flat
MAX_BLOCK_SAMPLES = 4_000_000  # samples (all channels) decoded at once: 16 MB of float32, whatever a header claims
MIN_SAMPLE_RATE = 1_000  # Hz; below this resampling to 16 kHz would multiply the samples more than 16-fold
MAX_SAMPLE_RATE = 768_000  # Hz; the highest rate audio interfaces offer
REFUSED = "the whole file is refused (no units from part of a file)"  # tokenize's rule for a file that breaks off
_MISLEADING = "possibly a pipe"  # libsndfile's reason for data it cannot parse; the path was checked with stat
_BAD_FORMAT_FIELDS = "SF_INFO struct incomplete"  # libsndfile's words for a header rate/channels <= 0 as int32
HEADER_BYTES = 4096  # bytes of a RIFF header searched for its fmt chunk


def check_sample_rate(rate: object, name: str = "sample_rate") -> int:
    """``rate`` as an int of Hz in MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, else a SamplesError naming ``name``.

    A whole-valued float (16000.0) is taken; 16000.5 is refused rather than truncated, since every
    later frame would sit at the wrong time.
    """
    if isinstance(rate, bool) or not isinstance(rate, Real) or (
            not isinstance(rate, Integral) and not (math.isfinite(rate) and float(rate).is_integer())):
        rate_ok = False
    else:
        rate_ok = MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
    if not rate_ok:
        raise SamplesError(f"{name} must be a positive whole number of Hz, got {rate!r} (audiotok reads "
                           f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz)")
    return int(rate)


def check_not_empty(samples: np.ndarray, name: str = "samples") -> None:
    """Refuse an array with an axis of size zero ((0,), (0, 2), (2, 0)): it holds no audio to tokenize."""
    if 0 in np.shape(samples):
        raise SamplesError(f"{name} shaped {np.shape(samples)} has an axis of size zero: no audio to tokenize")


def pick_channel(block: np.ndarray, channel: int | str, *, source: str) -> np.ndarray:
    """One ``(n,)`` signal from ``(n, channels)``: the mean of all channels, or channel ``channel`` alone."""
    channels = block.shape[1]
    if channel == CHANNEL_MEAN:
        return block.mean(axis=1, dtype=block.dtype) if channels > 1 else block[:, 0]
    if channel >= channels:
        raise AudioError(f"{source}: has {channels} channel{'s' if channels > 1 else ''}, so --channel {channel} "
                         f"is beyond them (channels count from 0)")
    return block[:, channel]


def to_mono_float32(samples: np.ndarray, *, source: str = "samples", channel: int | str = CHANNEL_MEAN) -> np.ndarray:
    """Mix (or pick one channel of) ``(n,)`` or ``(n, channels)`` float or integer PCM to mono float32 in [-1, 1]."""
    arr = np.asarray(samples)
    if arr.ndim not in (1, 2):
        raise SamplesError(f"{source}: expected samples shaped (n,) or (n, channels), got {arr.shape}")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise SamplesError(f"{source}: samples shaped {arr.shape} have no channels (give (n,) or (n, channels))")
    if np.issubdtype(arr.dtype, np.integer):
        scale = float(2 ** (8 * arr.dtype.itemsize - 1))
        offset = scale if np.issubdtype(arr.dtype, np.unsignedinteger) else 0.0
        arr = (arr.astype(np.float64) - offset) / scale
    elif not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{source}: samples must be float or integer PCM, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = pick_channel(arr, channel, source=source)
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_finite(block: np.ndarray, *, source: str, offset: int, rate: int) -> None:
    """Refuse NaN/Inf: they would silently turn every later frame into the same unit."""
    if not np.isfinite(block).all():
        first = int(np.flatnonzero(~np.isfinite(block))[0]) + offset
        raise AudioError(f"{source}: NaN or Inf sample at {first / rate:.3f} s")


class Resampler:
    """soxr's streaming resampler to 16 kHz; a pass-through when the rate already matches."""

    def __init__(self, in_rate: int) -> None:
        self.in_rate = check_sample_rate(in_rate)
        self._stream = (
            None if self.in_rate == SAMPLE_RATE
            else soxr.ResampleStream(self.in_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )

    def __call__(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block, last=last)


def array_blocks(samples: np.ndarray, sample_rate: int, *, source: str = "samples",
                 block_samples: int | None = None, channel: int | str = CHANNEL_MEAN) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks from an in-memory array (a bad rate or an empty axis: SamplesError)."""
    sample_rate = check_sample_rate(sample_rate)
    check_not_empty(samples, source)
    mono = to_mono_float32(samples, source=source, channel=channel)
    check_finite(mono, source=source, offset=0, rate=sample_rate)
    resample = Resampler(sample_rate)
    step = block_samples or int(READ_BLOCK_SECONDS * sample_rate)
    for start in range(0, len(mono), step):
        yield resample(mono[start:start + step])
    yield resample(np.zeros(0, np.float32), last=True)


def library_reason(exc: Exception, noise: Captured) -> str:
    """One line on why libsndfile failed: its own reason, or what its decoder printed when that is better."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = text.split(": ", 1)[-1].strip().rstrip(".") if text else ""
    printed = noise.summary()
    if not reason or _MISLEADING in reason:
        return f"decoder: {printed}" if printed else "unrecognised format or corrupt data"
    return f"{reason}; decoder: {printed}" if printed else reason


def _header_claims(rate: int | None, channels: int | None) -> str:
    said = f"{rate} Hz and {channels} channel(s)" if rate is not None else "a sample rate or channel count"
    return (f"header claims {said}; audiotok reads {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz with at least one "
            "channel")


def riff_format(path: str | os.PathLike) -> tuple[int, int] | None:
    """(sample rate, channels) from a RIFF/RF64 WAVE header's fmt chunk, read without libsndfile (which
    refuses a rate above 2**31 - 1 with an internal message); None when the header is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError:
        return None
    if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    at = 12
    while at + 8 <= len(head):
        size = int.from_bytes(head[at + 4:at + 8], "little")
        if head[at:at + 4] == b"fmt " and at + 16 <= len(head):
            return int.from_bytes(head[at + 12:at + 16], "little"), int.from_bytes(head[at + 10:at + 12], "little")
        at += 8 + size + (size & 1)
    return None


def open_audio(path: str | os.PathLike) -> sf.SoundFile:
    """Open an audio file, turning every way it can fail into one clear :class:`AudioError`.

    The path is checked with ``os.stat`` first: a FIFO would block the open, a device never ends.
    """
    p = require_regular_file(path, AudioError, what="an audio file", hint=PIPED_AUDIO_HINT)
    noise = Captured()
    try:
        with captured_stderr() as noise:
            f = sf.SoundFile(os.fsencode(p))  # bytes: a name that is not UTF-8 opens too
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if _BAD_FORMAT_FIELDS in str(exc):  # audiotok's range, not libsndfile's internal words
            raise AudioError(f"{p}: {_header_claims(*(riff_format(p) or (None, None)))}") from None
        raise AudioError(f"{p}: not a readable audio file ({library_reason(exc, noise)})") from None
    except OSError as exc:  # permission denied, an I/O error on the disk
        raise AudioError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not MIN_SAMPLE_RATE <= f.samplerate <= MAX_SAMPLE_RATE or f.channels < 1:
        f.close()
        raise AudioError(f"{p}: {_header_claims(f.samplerate, f.channels)}")
    return f


def block_frames(rate: int, channels: int, seconds: float) -> int:
    """Frames per decoded block: ``seconds`` of audio, but never more than MAX_BLOCK_SAMPLES samples."""
    return max(1, min(int(seconds * rate), MAX_BLOCK_SAMPLES // max(1, channels)))


def _decoder_position(f: sf.SoundFile, yielded: int) -> int:
    """Frames the decoder got through before it failed: its own position, else what was yielded."""
    try:
        position = int(f.tell())
    except Exception:  # noqa: BLE001 - a decoder in an error state may refuse to seek as well
        return yielded
    return max(yielded, min(position, f.frames if f.frames > 0 else position))


def decoded_blocks(f: sf.SoundFile, *, source: str, block_seconds: float = READ_BLOCK_SECONDS,
                   channel: int | str = CHANNEL_MEAN, on_failure: str = REFUSED) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of an open file at its own sample rate (no resampling).

    Streaming reads files through this with short blocks and resamples as a microphone would;
    :func:`file_blocks` reads through it with long ones. A file that breaks off is reported with
    the time the decoder reached (not just what was yielded) and ``on_failure``: what the caller
    does with the audio before that point.
    """
    step = block_frames(f.samplerate, f.channels, block_seconds)
    if channel != CHANNEL_MEAN and channel >= f.channels:
        pick_channel(np.zeros((0, f.channels), np.float32), channel, source=source)  # raises: before any audio
    offset = 0
    while True:  # read() until it returns nothing: soundfile's blocks() trusts the header's length and
        noise = Captured()  # yields its stale buffer forever when a header claims more than there is
        try:
            with captured_stderr() as noise:
                block = f.read(step, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            reached = _decoder_position(f, offset) / f.samplerate
            declared = f" of {f.frames / f.samplerate:.2f} s in its header" if f.frames > 0 else ""
            raise AudioError(f"{source}: decoding failed at {reached:.2f} s{declared} "
                             f"({library_reason(exc, noise)}); {on_failure}") from None
        if not len(block):
            return
        mono = pick_channel(block, channel, source=source)
        check_finite(mono, source=source, offset=offset, rate=f.samplerate)
        offset += len(mono)
        yield np.ascontiguousarray(mono)


def file_blocks(path: str | os.PathLike, *, channel: int | str = CHANNEL_MEAN) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks decoded from an audio file (all channels mixed, or one; all of it,
    or an AudioError)."""
    with open_audio(path) as f:
        resample = Resampler(f.samplerate)
        for block in decoded_blocks(f, source=str(path), channel=channel):
            yield resample(block)
        yield resample(np.zeros(0, np.float32), last=True)
