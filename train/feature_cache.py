"""Features on disk in shards: extraction survives crashes, and k-means reads them in bounded memory.

Hundreds of hours of 768-dim features do not fit in memory and take hours to extract, so they are
written to a cache folder as shards: ``shard-00042.npy`` (float16 ``[rows, dim]``, read back
memory-mapped) and ``shard-00042.json`` (which files, how many frames each, which failed). The JSON
is written last, each file through a temp name and a rename, so a shard without its JSON is a
half-written one and is extracted again; a shard with it is never recomputed.

The cache folder is keyed by everything the features depend on: the encoder (spec, and the files of
a local checkpoint), the windowing, the file list (paths, sizes, mtimes), ``--percent``/``--seed``
and ``--max-hours``. Another encoder, layer or file list gets another folder, so a stale cache is
never read; different ``--k`` with the same data share one (a k sweep extracts once).

Shards are planned before extraction (consecutive files, about ``shard_seconds`` of audio each, by
their headers), so a resumed or distributed run produces exactly the same shards.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiotok.runtime.constants import FRAME_SECONDS, SAMPLE_RATE, frame_count
from audiotok.runtime.corpus.listing import CorpusFile
from audiotok.runtime.errors import os_error_line
from audiotok.runtime.audio.file_kind import special_kind
from audiotok.runtime.formats.staging import OutputError, atomic_path
from audiotok.runtime.process.native_stderr import captured_stderr

CACHE_FORMAT = 2  # 2: windows cut short by the end run to the input's last sample
DEFAULT_CACHE_NAME = "audiotok-features"  # beside the centroids, shared by every run in that folder
FLOAT16_MAX = 65504.0
DEFAULT_PROCESSOR = {"channel": "mean", "trim_db": None, "pad_last_frame": False, "feature_norm": "none",
                     "max_frames_file": None}


@dataclass(frozen=True)
class PlannedFile:
    index: int  # position in the corpus: seeds this file's frame sampling, whoever extracts it
    path: str
    max_frames: int | None = None  # the --max-hours cut falls inside this file


@dataclass(frozen=True)
class ShardTask:
    index: int
    files: tuple[PlannedFile, ...]


@dataclass(frozen=True)
class ShardResult:
    index: int
    features: np.ndarray  # [rows, dim], float16 (float32 if a value exceeds float16's range)
    files: list[dict[str, Any]] = field(default_factory=list)  # {"path", "frames", "rows"}
    errors: list[dict[str, str]] = field(default_factory=list)  # {"path", "error"}


def cache_dtype(features: np.ndarray) -> np.ndarray:
    """float16 halves the disk and I/O; a layer with values beyond its range stays float32."""
    if features.size and float(np.abs(features).max()) >= FLOAT16_MAX:
        return features.astype(np.float32, copy=False)
    return features.astype(np.float16)


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
        return [str(Path(path).absolute()), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(Path(path).absolute()), None, None]


def model_fingerprint(model: str) -> list | None:
    """Sizes and mtimes of a local checkpoint's files (new weights in the same folder: new cache)."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    return [[p.name, *_stat(str(p))[1:]] for p in sorted(folder.iterdir()) if p.is_file()]


def cache_key(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def describe(*, spec: dict[str, Any], model: str, policy: dict[str, Any], files: list[CorpusFile],
             percent: float, seed: int, max_hours: float | None, shard_seconds: float,
             processor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the cached features depend on (hashed into the cache folder's name; kept in key.json).

    ``processor`` (channel, trim, frame rule, feature norm, per-file cap) enters the key only when
    one of them is set, so caches made before those options existed are still found."""
    listing = json.dumps([_stat(f.path) for f in files]).encode()
    extra = {}
    if processor and processor != DEFAULT_PROCESSOR:
        extra["processor"] = processor
    seeded = percent < 100 or (processor or {}).get("max_frames_file") is not None
    return {**extra, "format": CACHE_FORMAT, "encoder": spec, "checkpoint": model_fingerprint(model), "policy": policy,
            "files": {"count": len(files), "sha256": hashlib.sha256(listing).hexdigest()}, "percent": percent,
            "seed": seed if seeded else None, "max_hours": max_hours,
            "shard_seconds": shard_seconds}


def expected_frames(path: str) -> int:
    """Frames a file will give, from its header (0 if unreadable: extraction will report it).

    A pipe or device is never opened here (a FIFO would block): extraction refuses it by name.
    """
    if special_kind(path) is not None:
        return 0
    try:
        with captured_stderr():  # a broken mp3's decoder notes; extraction reports the file
            info = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return 0
    return frame_count(round(info.frames * SAMPLE_RATE / info.samplerate)) if info.samplerate > 0 else 0


def plan_shards(files: list[CorpusFile], shard_seconds: float, max_hours: float | None) -> list[ShardTask]:
    """Consecutive files, about ``shard_seconds`` of audio per shard; stop at ``max_hours``."""
    budget = None if max_hours is None else int(max_hours * 3600 / FRAME_SECONDS)
    per_shard = max(1, int(shard_seconds / FRAME_SECONDS))
    shards: list[ShardTask] = []
    current: list[PlannedFile] = []
    in_shard = total = 0
    for index, item in enumerate(files):
        frames = expected_frames(item.path)
        cut = None
        if budget is not None and total + frames >= budget:
            cut = budget - total
        current.append(PlannedFile(index, item.path, cut))
        in_shard += frames
        total += frames
        if cut is not None or in_shard >= per_shard:
            shards.append(ShardTask(len(shards), tuple(current)))
            current, in_shard = [], 0
        if cut is not None:
            break
    if current:
        shards.append(ShardTask(len(shards), tuple(current)))
    return shards


class FeatureCache:
    """One cache folder: the plan, the shards done so far, and readers for the fit."""

    def __init__(self, root: str | os.PathLike, description: dict[str, Any]) -> None:
        self.key = cache_key(description)
        self.folder = Path(root) / self.key[:16]
        key_file = self.folder / "key.json"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not key_file.exists():
                with atomic_path(key_file) as tmp:
                    tmp.write_text(json.dumps(description, indent=1, sort_keys=True, default=str) + "\n")
        except (OSError, OutputError) as exc:  # a read-only or full disk: say it is the cache, and how to move it
            detail = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
            raise OutputError(f"feature cache {detail}; give --cache a writable folder") from None

    def _npy(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.npy"

    def _index(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.json"

    def plan(self, files: list[CorpusFile], shard_seconds: float, max_hours: float | None) -> list[ShardTask]:
        """The shard plan, made once and read back on every later run (file headers are read once)."""
        path = self.folder / "plan.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            return [ShardTask(s["index"], tuple(PlannedFile(**f) for f in s["files"])) for s in data]
        shards = plan_shards(files, shard_seconds, max_hours)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps([asdict(s) for s in shards]), encoding="utf-8")
        return shards

    def read_index(self, index: int) -> dict[str, Any] | None:
        """A finished shard's index, or None if the shard is missing, half-written or damaged."""
        try:
            meta = json.loads(self._index(index).read_text(encoding="utf-8"))
            array = np.load(self._npy(index), mmap_mode="r")
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        if array.shape != (meta["rows"], meta["dim"]) or str(array.dtype) != meta["dtype"]:
            return None
        return meta

    def write(self, result: ShardResult) -> dict[str, Any]:
        """Features first, index last: the index's presence is what says the shard is complete."""
        features = cache_dtype(result.features)
        with atomic_path(self._npy(result.index)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, features)
        meta = {"index": result.index, "rows": int(features.shape[0]), "dim": int(features.shape[1]),
                "dtype": str(features.dtype), "files": result.files, "errors": result.errors}
        with atomic_path(self._index(result.index)) as tmp:
            tmp.write_text(json.dumps(meta), encoding="utf-8")
        return meta

    def load(self, index: int) -> np.ndarray:
        """A shard's features, memory-mapped (read from disk only as used)."""
        return np.load(self._npy(index), mmap_mode="r")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("shard-*.npy"))


class CachedFeatures:
    """The finished shards of a cache as one logical ``[rows, dim]`` matrix that is never all in memory."""

    def __init__(self, cache: FeatureCache, metas: list[dict[str, Any]]) -> None:
        self.cache = cache
        self.metas = [m for m in metas if m["rows"] > 0]
        self.dim = metas[0]["dim"] if metas else 0
        self.starts = np.cumsum([0] + [m["rows"] for m in self.metas])

    @property
    def rows(self) -> int:
        return int(self.starts[-1])

    @property
    def nbytes_float32(self) -> int:
        return self.rows * self.dim * 4

    def __len__(self) -> int:
        return len(self.metas)

    def shard(self, i: int) -> np.ndarray:
        """Shard ``i`` (in plan order, empty ones skipped) as float32 in memory."""
        return np.asarray(self.cache.load(self.metas[i]["index"]), dtype=np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by global index (sorted), gathered shard by shard from the memory maps."""
        rows = np.asarray(rows)
        out = np.empty((len(rows), self.dim), np.float32)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for i in np.unique(which):
            mask = which == i
            out[mask] = self.cache.load(self.metas[i]["index"])[rows[mask] - self.starts[i]]
        return out

    def all(self) -> np.ndarray:
        """Every row as one float32 array: only for the in-memory fit, under its memory limit."""
        out = np.empty((self.rows, self.dim), np.float32)
        for i in range(len(self)):
            out[self.starts[i]:self.starts[i + 1]] = self.cache.load(self.metas[i]["index"])
        return out
