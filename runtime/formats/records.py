"""One line per audio file: the txt, jsonl and fairseq record formats, and the names they cannot hold.

- ``txt``: ``path<TAB>u1 u2 ...``.
- ``jsonl``: ``{"path", "units", "frames", "seconds"}`` (+ ``durations`` with dedup, ``offset`` when trimmed,
  ``input_size`` and ``input_mtime_ns`` in a resumable output).
- ``fairseq``: ``stem|u1 u2 ...``, the unit files fairseq/GSLM speech LMs read.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np

from ..constants import FRAME_SECONDS, SAMPLE_RATE
from ..errors import is_line_break
from ..unit_runs import dedup
from .staging import OutputError


def format_record(path: str, units: np.ndarray, fmt: str, *, collapse: bool, offset: int | None = None,
                  source: tuple[int, int] | None = None) -> str:
    """One output line (without newline) for one file's units; jsonl gives a trimmed file's ``offset`` and,
    in a resumable output, its input's ``source`` (size, mtime_ns) last, where a resume reads it back."""
    frames = int(len(units))
    shown, durations = dedup(units) if collapse else (np.asarray(units), None)
    if fmt == "txt":
        return f"{path}\t{' '.join(map(str, shown.tolist()))}"
    record: dict[str, object] = {
        "path": path,
        "units": shown.tolist(),
        "frames": frames,
        "seconds": round(frames * FRAME_SECONDS, 2),
    }
    if durations is not None:
        record["durations"] = durations.tolist()  # frames per deduplicated unit
    if offset is not None:  # --trim-silence: where the first kept frame starts in the file
        record["offset"] = round(offset / SAMPLE_RATE, 4)
        record["offset_samples"] = int(offset)
    if source is not None:  # a resumable output: what the input was when it was read (see run_identity)
        record["input_size"], record["input_mtime_ns"] = int(source[0]), int(source[1])
    return json.dumps(record)


def fairseq_record(path: str, units: np.ndarray, *, collapse: bool) -> str:
    """``stem|u1 u2 ...``: fairseq/GSLM's unit file line (stem: file name without folder and extension)."""
    shown = dedup(units)[0] if collapse else np.asarray(units)
    return f"{Path(path).stem}|{' '.join(map(str, shown.tolist()))}"


def check_record_path(path: str, fmt: str) -> None:
    """Refuse a path that would forge records in a line or tab-separated output (txt, fairseq, npy index).

    A tab, newline, CR or other control or line-break character in a file name, written raw, would
    start a new field or record (a file named ``x.wav``, newline, ``victim.wav``, tab, ``1 2 3``);
    jsonl escapes them, so it takes any name.
    """
    if any(unicodedata.category(c) == "Cs" for c in path):  # undecodable bytes, kept as surrogates
        raise OutputError(f"{ascii(path)}: a {fmt} output is UTF-8 and this file name is not; rename the file "
                          "or use --format jsonl")
    bad = next((c for c in path if is_line_break(c)), None)
    if bad is not None:
        raise OutputError(f"{ascii(path)}: a {fmt} output cannot hold a path containing {ascii(bad)} (it would "
                          "read as another record); rename the file or use --format jsonl")
