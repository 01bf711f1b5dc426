"""Writing results: records in txt or jsonl, to stdout or atomically to a file."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from .constants import FRAME_SECONDS
from .units import dedup


def format_record(path: str, units: np.ndarray, fmt: str, *, collapse: bool) -> str:
    """One output line (without newline) for one file's units."""
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
    return json.dumps(record)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``target``; it replaces ``target`` only if the block succeeds.

    On any error the temp file is removed, so an existing output is never replaced by a partial one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: str | None) -> Iterator[IO[str]]:
    """Yield a text stream: stdout for ``None``/``-``, else a file written through :func:`atomic_path`."""
    if path in (None, "-"):
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as stream:
        yield stream
