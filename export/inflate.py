"""Inflating a compressed vocabulary file on demand, never past a bound tied to its size.

joblib can compress a pickle with zlib, gzip, bz2, xz, lzma or lz4 (the last needs the lz4
package). Decompressing such a file whole before looking at it lets 500 KB of zeros become
gigabytes of memory. Instead the unpickler reads from :class:`InflatingReader`, which inflates a
megabyte at a time as bytes are asked for, never allocates what a length field merely claims, and
refuses to produce more than ``limit`` bytes in total: memory follows what the pickle really holds,
up to the bound, whatever the file says.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Any

from .centroid_limits import CentroidsError

STEP_BYTES = 1 << 20  # inflated per step
_ERRORS = (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError, RuntimeError)  # lz4 raises RuntimeError


def make_decoder(codec: str) -> Any:
    if codec == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if codec == "zlib":
        return zlib.decompressobj()
    if codec == "bz2":
        return bz2.BZ2Decompressor()
    if codec == "lz4":
        try:
            import lz4.frame
        except ImportError:
            raise CentroidsError("lz4-compressed (joblib compress='lz4'); reading it needs lz4: "
                                 "pip install lz4") from None
        return lz4.frame.LZ4FrameDecompressor()
    return lzma.LZMADecompressor()  # xz and joblib's "lzma" (the .lzma "alone" format) alike


class InflatingReader:
    """A read-only file (``read``, ``readline``) over compressed bytes, inflated on demand up to ``limit``."""

    def __init__(self, compressed: bytes, codec: str, limit: int) -> None:
        self.codec, self.limit, self.inflated = codec, limit, 0
        self._decoder = make_decoder(codec)
        self._is_zlib = codec in ("zlib", "gzip")
        self._input = compressed
        self._pending = b""
        self._done = False

    def _step(self) -> bytes:
        """The next piece of inflated data; b"" at the end of the compressed stream."""
        decoder = self._decoder
        if self._done or decoder.eof:
            self._done = True
            return b""
        try:
            if self._is_zlib:
                out = decoder.decompress(self._input, STEP_BYTES)
                self._input = decoder.unconsumed_tail
            else:
                out = decoder.decompress(self._input, STEP_BYTES)
                self._input = b""
        except _ERRORS as exc:
            raise CentroidsError(f"looks {self.codec}-compressed but does not decompress ({exc})") from None
        if not out and (decoder.eof or (not self._input if self._is_zlib else decoder.needs_input)):
            self._done = True  # the end, or a truncated stream: the unpickler reports what it lacks
        self.inflated += len(out)
        if self.inflated > self.limit:
            raise CentroidsError(f"{self.codec} data that inflates beyond {self.limit >> 20} MiB; no k-means "
                                 f"pickle compresses that well (a decompression bomb?)")
        return out

    def _fill(self, enough) -> None:
        parts, have = [self._pending], len(self._pending)
        while not enough(parts[-1], have) and not self._done:
            out = self._step()
            parts.append(out)
            have += len(out)
        self._pending = b"".join(parts)

    def read(self, size: int = -1) -> bytes:
        self._fill(lambda last, have: 0 <= size <= have)
        cut = len(self._pending) if size < 0 else size
        data, self._pending = self._pending[:cut], self._pending[cut:]
        return data

    def readline(self) -> bytes:
        self._fill(lambda last, have: b"\n" in last)
        end = self._pending.find(b"\n") + 1 or len(self._pending)
        data, self._pending = self._pending[:end], self._pending[end:]
        return data
