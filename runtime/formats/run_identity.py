"""What proves a resumed jsonl run is the same job: the settings that decide units, and each input's identity.

A resume appends to records an earlier run wrote. That is only sound when every record in the file
means the same thing, so the run file (``OUT.run.json``) records everything that decides units,
stated or defaulted: the bundle's content hash (not its path: a re-exported bundle under the same
name is another job), what its manifest says about the units, every processor option the run used,
``--max-pass-seconds``, ``--dedup`` and the format. A resume that differs in any of them is refused
with one line naming each difference, both values.

Each record also carries its input's size and modification time (``input_size``,
``input_mtime_ns``, taken before the file is read). A file that changed since its record was written
is tokenized again and its old record dropped, so the output still holds every path exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

HASH_CHUNK_BYTES = 1 << 20  # read this much at a time while hashing a bundle: flat memory for any size

# Recorded by every run file since resumable outputs existed: what recognises a run file as audiotok's.
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "bundle": (str,), "centroids_sha256": (str,), "encoder": (str,), "layer": (int, type(None)), "k": (int,),
    "normalization": (str,), "precision": (str,), "dedup": (bool,), "format": (str,)}
# Recorded since a resume had to prove it is the same job. A run file without them was written by an
# older audiotok: it cannot prove that, so resuming it is refused (--overwrite starts over).
UNIT_FIELDS: dict[str, tuple[type, ...]] = {
    "bundle_sha256": (str,), "channel": (str, int), "trim_silence_db": (float, int, type(None)),
    "frame_rule": (str,), "feature_norm": (str,), "max_pass_seconds": (float, int)}
IGNORED_ON_RESUME = ("bundle",)  # the path is kept for people; the content hash decides

Source = tuple[int, int]  # (size in bytes, modification time in ns) of an input file


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks (a bundle may be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def input_source(path: str | os.PathLike) -> Source | None:
    """``(size, mtime_ns)`` of an input file, following links; None when it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_size, info.st_mtime_ns


def _shown(value: Any) -> str:
    text = repr(value)
    return text[:14] + "...'" if isinstance(value, str) and len(value) == 64 else text  # hashes: a prefix


def settings_differences(previous: dict[str, Any], current: dict[str, Any]) -> tuple[str, str] | None:
    """``("k=16, channel='mean'", "k=32, channel=0")`` for the fields that differ (then, now), or None."""
    changed = sorted(k for k in current if k not in IGNORED_ON_RESUME and previous.get(k) != current[k])
    if not changed:
        return None
    return (", ".join(f"{k}={_shown(previous.get(k))}" for k in changed),
            ", ".join(f"{k}={_shown(current[k])}" for k in changed))


def missing_unit_fields(previous: dict[str, Any]) -> list[str]:
    return [key for key in UNIT_FIELDS if key not in previous]


def check_types(data: dict[str, Any], fields: dict[str, tuple[type, ...]], source: Path, *,
                required: bool) -> str | None:
    """Why ``data`` is not a run file audiotok wrote (a field of the wrong JSON type), or None."""
    for key, types in fields.items():
        if key not in data and not required:
            continue
        value = data.get(key)
        if key not in data or not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            return (f"{source}: {key!r} is {json.dumps(value)[:40] if key in data else 'missing'} "
                    f"where audiotok writes {expected}: not a run file audiotok wrote")
    return None
