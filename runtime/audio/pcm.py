"""Raw PCM from a byte stream (stdin in a pipe): ``arecord``, ``ffmpeg -f s16le``, ``sox -t raw``.

Reads whatever bytes are available (never waiting to fill a large buffer, so a live pipe is not
delayed) and yields whole sample frames. A trailing partial frame at end of input is dropped
with a warning: the producer was cut off, and what came before it is still good audio.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from ..errors import AudioError
from ..log import log

ENCODINGS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # name -> little-endian sample type
READ_SECONDS = 0.1  # read at most this much audio per call: small enough for live pipes


def pcm_blocks(stream: BinaryIO, *, encoding: str, channels: int, rate: int) -> Iterator[np.ndarray]:
    """Yield ``(frames, channels)`` arrays of ``encoding`` samples until end of input."""
    dtype = ENCODINGS[encoding]
    frame_bytes = dtype.itemsize * channels
    read = getattr(stream, "read1", stream.read)  # read1: what is there now, up to the limit
    limit = max(frame_bytes, int(READ_SECONDS * rate) * frame_bytes)
    pending = b""
    frames_read = 0
    nonblocking = _is_nonblocking(stream)
    while data := _read(stream, read, limit, nonblocking, seconds=frames_read / rate):
        pending += data
        whole = len(pending) - len(pending) % frame_bytes
        if whole:
            frames_read += whole // frame_bytes
            yield np.frombuffer(pending[:whole], dtype=dtype).reshape(-1, channels)
            pending = pending[whole:]
    if pending:
        log.warning("input ended inside a sample frame; ignored its last %d byte(s) (%s, %d channel(s) = %d bytes "
                    "per frame)", len(pending), encoding, channels, frame_bytes)


def _is_nonblocking(stream: BinaryIO) -> bool:
    try:
        return not os.get_blocking(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test's BytesIO)
        return False


def _read(stream: BinaryIO, read, limit: int, nonblocking: bool, *, seconds: float) -> bytes:
    """The next bytes, b"" only at end of input; a failed read is one AudioError.

    A non-blocking pipe (O_NONBLOCK inherited from the producer's side) answers "nothing yet" with
    b"" or None, which would look like the end: wait until it is readable, then read again.
    """
    try:
        data = read(limit)
        while nonblocking and not data:
            select.select([stream], [], [])
            data = read(limit)
            if data is not None:
                break  # readable and b"": a real end of input
    except (OSError, ValueError) as exc:  # EIO from a hung-up terminal, a closed stream
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise AudioError(f"stdin: reading PCM failed after {seconds:.2f} s of audio ({reason})") from None
    return data or b""
