"""Raw PCM from a byte stream (stdin in a pipe): ``arecord``, ``ffmpeg -f s16le``, ``sox -t raw``.

Reads whatever bytes are available (never waiting to fill a large buffer, so a live pipe is not
delayed) and yields whole sample frames. A trailing partial frame at end of input is dropped
with a warning: the producer was cut off, and what came before it is still good audio.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

ENCODINGS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # name -> little-endian sample type
READ_SECONDS = 0.1  # read at most this much audio per call: small enough for live pipes


def pcm_blocks(stream: BinaryIO, *, encoding: str, channels: int, rate: int) -> Iterator[np.ndarray]:
    """Yield ``(frames, channels)`` arrays of ``encoding`` samples until end of input."""
    dtype = ENCODINGS[encoding]
    frame_bytes = dtype.itemsize * channels
    read = getattr(stream, "read1", stream.read)  # read1: what is there now, up to the limit
    limit = max(frame_bytes, int(READ_SECONDS * rate) * frame_bytes)
    pending = b""
    while data := read(limit):
        pending += data
        whole = len(pending) - len(pending) % frame_bytes
        if whole:
            yield np.frombuffer(pending[:whole], dtype=dtype).reshape(-1, channels)
            pending = pending[whole:]
    if pending:
        print(f"audiotok: warning: input ended inside a sample frame; ignored its last {len(pending)} "
              f"byte(s) ({encoding}, {channels} channel(s) = {frame_bytes} bytes per frame)", file=sys.stderr)
