"""A JSONL output that survives crashes: one line per file, appended and flushed, read back on restart.

A corpus run writes ``OUT.jsonl`` a record at a time, so a crash loses only the files in flight.
Starting the same command again reads ``OUT.jsonl`` back, skips every path it already holds, cuts
off a torn last line (a record whose write was interrupted) and appends the rest; no path is ever
written twice. Beside it:

* ``OUT.run.json``: the bundle (centroids hash, encoder, layer, k) and ``--dedup`` the records were
  made with, written before the first record. Resuming with another bundle is refused, because
  mixing two unit vocabularies in one file is silent corruption.
* ``OUT.errors.jsonl``: ``{"path", "error"}`` for each file that failed in the last run (removed when
  none did). Failed files are not in ``OUT.jsonl``, so the next run retries them.

Records are matched by their ``path`` exactly as written, so resume with the same path arguments
(and, for relative paths, from the same folder).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import SettingsError
from .output import atomic_path, format_record

RECORD_PREFIX = '{"path": "'  # how format_record starts every jsonl record
FSYNC_INTERVAL_SECONDS = 30.0  # flush to the OS on every record, to the disk this often (power loss)


def side_path(output: str | os.PathLike, suffix: str) -> Path:
    """``units.jsonl`` -> ``units<suffix>`` (e.g. ``units.errors.jsonl``)."""
    out = Path(output)
    return out.with_name(out.stem + suffix) if out.suffix else out.with_name(out.name + suffix)


def _record_path(line: str, number: int, source: Path) -> str:
    """The path of one complete record line, read without parsing the (possibly huge) units list."""
    if not line.startswith(RECORD_PREFIX) or not line.rstrip("\n").endswith("}"):
        raise SettingsError(f"{source}:{number}: not a record audiotok wrote; refusing to resume into it "
                            "(use another -o, or --overwrite)")
    path, _ = json.decoder.scanstring(line, len(RECORD_PREFIX))
    return path


def scan_output(path: Path) -> tuple[set[str], int, int]:
    """(paths done, byte length of the intact records, bytes of a torn tail to cut off).

    Only the last line can be torn: records are appended with one write each by one writer.
    """
    done: set[str] = set()
    intact = 0
    number = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                break  # torn: the write of this record was cut short
            line = raw.decode("utf-8", errors="strict")
            done.add(_record_path(line, number, path))
            intact += len(raw)
    size = path.stat().st_size
    return done, intact, size - intact


class ResumableJsonl:
    """``write(path, units)`` appends one flushed record; ``done`` holds the paths already in the file."""

    def __init__(self, output: str | os.PathLike, *, dedup: bool, identity: dict[str, Any],
                 overwrite: bool = False) -> None:
        self.path = Path(output)
        self.dedup = dedup
        self.run_path = side_path(self.path, ".run.json")
        self.errors_path = side_path(self.path, ".errors.jsonl")
        self.identity = {**identity, "dedup": dedup, "format": "jsonl"}
        self.done: set[str] = set()
        self.repaired_bytes = 0
        self.written = 0
        self.errors: list[dict[str, str]] = []
        self.overwrite = overwrite
        self.fresh = overwrite or not self.path.exists() or self.path.stat().st_size == 0
        if not self.fresh:
            self._resume()
        self._stream: IO[str] | None = None  # opened at the first record: a run that never starts writes nothing
        self._synced = time.monotonic()

    def _open(self) -> IO[str]:
        if self.fresh:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.run_path) as tmp:
                tmp.write_text(json.dumps(self.identity, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            self.path.write_bytes(b"")
            self.fresh = False
        return open(self.path, "a", encoding="utf-8")

    def _resume(self) -> None:
        try:
            previous = json.loads(self.run_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise SettingsError(f"{self.path} exists but {self.run_path.name} (what it was made with) is missing "
                                "or unreadable, so it cannot be resumed safely: use another -o, or --overwrite"
                                ) from None
        changed = sorted(k for k in self.identity if k != "bundle" and previous.get(k) != self.identity[k])
        if changed:
            was = ", ".join(f"{k}={previous.get(k)!r}" for k in changed)
            raise SettingsError(f"{self.path} was made with other settings ({was}); resuming would mix them: "
                                "use another -o, or --overwrite to start over")
        self.done, intact, torn = scan_output(self.path)
        if torn:
            with open(self.path, "r+b") as f:
                f.truncate(intact)
            self.repaired_bytes = torn

    def write(self, path: str, units: np.ndarray) -> None:
        if path in self.done:  # engines never repeat a path; this guards the file's one-record-per-path promise
            return
        if self._stream is None:
            self._stream = self._open()
        self._stream.write(format_record(path, units, "jsonl", collapse=self.dedup) + "\n")
        self._stream.flush()
        self.done.add(path)
        self.written += 1
        if time.monotonic() - self._synced > FSYNC_INTERVAL_SECONDS:
            os.fsync(self._stream.fileno())
            self._synced = time.monotonic()

    def record_error(self, path: str, message: str) -> None:
        self.errors.append({"path": path, "error": message})

    def close(self) -> None:
        """Sync the records and write (or clear) this run's error list."""
        if self._stream is None and self.fresh and self.overwrite and self.path.exists():
            self._stream = self._open()  # --overwrite with nothing written still discards the old records
        if self._stream is not None and not self._stream.closed:
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
        if self.errors:
            with atomic_path(self.errors_path) as tmp:
                tmp.write_text("".join(json.dumps(e) + "\n" for e in self.errors), encoding="utf-8")
        else:
            self.errors_path.unlink(missing_ok=True)
