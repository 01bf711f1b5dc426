"""Where units go: every output format behind one writer interface (:class:`~.base.UnitWriter`).

- ``txt``: ``path<TAB>u1 u2 ...`` per file.
- ``jsonl``: ``{"path", "units", "frames", "seconds"}`` per file (+ ``durations`` with dedup). Written
  to a file, it is resumable: records are appended as files finish, and the same command picks
  up where a crashed run stopped (:mod:`.resumable`).
- ``fairseq``: ``stem|u1 u2 ...`` per file, the unit files fairseq/GSLM speech LMs read
  (stem: the file name without folder and extension, so stems must be unique).
- ``npy``: a folder of shards for large corpora (:mod:`.units_folder`).

Every other output is staged beside its target and renamed into place, so a failed run never
leaves a partial output. :func:`open_writer` picks the staged writer for a format; a resumable
jsonl file is a :class:`~.resumable.ResumableJsonl`, built directly because its caller reads what
is already done before the run starts.
"""

from __future__ import annotations

import os

from ..errors import SettingsError
from .base import UnitWriter
from .lines import LineWriter
from .resumable import ResumableJsonl
from .units_folder import NpyShardWriter

__all__ = ["FORMATS", "LineWriter", "NpyShardWriter", "ResumableJsonl", "UnitWriter", "open_writer"]

FORMATS = ("txt", "jsonl", "fairseq", "npy")


def open_writer(fmt: str, output: str | os.PathLike | None, *, k: int, dedup: bool = False) -> UnitWriter:
    """A staged writer for ``fmt`` (one of ``FORMATS``) to ``output`` (``-``/None: stdout, line formats only)."""
    if fmt not in FORMATS:
        raise SettingsError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if fmt == "npy":
        return NpyShardWriter(output, k=k, dedup=dedup)
    return LineWriter(output, fmt, dedup=dedup)
