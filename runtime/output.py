"""Writing results: one record line per file, and files (or folders) that appear only when complete."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

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


def stage_beside(target: Path, *, folder: bool = False) -> Path:
    """A new temp file (or folder) in ``target``'s folder, so renaming it onto ``target`` is atomic."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``target``; it replaces ``target`` only if the block succeeds.

    On any error the temp file is removed, so an existing output is never replaced by a partial one.
    """
    tmp = stage_beside(Path(target))
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
