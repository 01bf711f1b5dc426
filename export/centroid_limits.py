"""What every vocabulary reader shares: its error and the bound on how far a file may inflate.

The format readers (``sklearn_pickle``, ``torch_centroids``, ``faiss_index``, ``inflate``) and the
sniffing front door (``centroids``) all need these; keeping them here lets the front door import
the readers without the readers importing it back.
"""

from __future__ import annotations

from audiotok.runtime.errors import AudiotokError

# Decompressing or unzipping a vocabulary may give at most INFLATION_RATIO x its stored size, at
# least MIN_INFLATED_BYTES (small files) and never more than MAX_INFLATED_BYTES.
INFLATION_RATIO = 50
MIN_INFLATED_BYTES = 64 << 20
MAX_INFLATED_BYTES = 4 << 30
# joblib's optional compressors: gzip, bz2, xz, lzma, zlib (stdlib) and lz4 (the lz4 package).
COMPRESSED_MAGICS = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x5d\x00\x00": "lzma",
                     b"\x78\x01": "zlib", b"\x78\x5e": "zlib", b"\x78\x9c": "zlib", b"\x78\xda": "zlib",
                     b"\x04\x22\x4d\x18": "lz4"}


class CentroidsError(AudiotokError):
    """Centroids that cannot be read or do not fit the encoder."""


def inflation_limit(stored_bytes: int) -> int:
    """The most bytes a vocabulary file of ``stored_bytes`` may decompress or claim to: a k-means
    compresses a few times at most, so anything far beyond is a decompression bomb or a lie."""
    return min(MAX_INFLATED_BYTES, max(MIN_INFLATED_BYTES, INFLATION_RATIO * stored_bytes))
