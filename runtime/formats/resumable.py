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

Safety: the run holds an exclusive lock on ``OUT.jsonl`` (see :class:`OutputLock`), so a second
run on the same output refuses at once. Every side file is recognised by its content before it is
replaced or removed: a user's ``OUT.run.json`` or ``OUT.errors.jsonl`` stops the run untouched,
and so does an ``OUT.jsonl`` that does not hold audiotok's records (also with ``--overwrite``).
A damaged record or run file (invalid UTF-8, bad JSON, wrong types) is one error naming the file
and line, and nothing is changed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import SettingsError
from .base import UnitWriter
from .locks import OutputLock
from .records import format_record
from .side_files import check_side_file, read_head, read_json_object
from .staging import OutputError, atomic_path, close_quietly, writing

RECORD_PREFIX = '{"path": "'  # how format_record starts every jsonl record
RECORD_UNITS = ', "units": ['  # what follows the path in every record
# The run file's fields and their JSON types: anything else was not written by audiotok.
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "bundle": (str,), "centroids_sha256": (str,), "encoder": (str,), "layer": (int, type(None)), "k": (int,),
    "normalization": (str,), "precision": (str,), "dedup": (bool,), "format": (str,)}
FSYNC_INTERVAL_SECONDS = 30.0  # flush to the OS on every record, to the disk this often (power loss)


def side_path(output: str | os.PathLike, suffix: str) -> Path:
    """``units.jsonl`` -> ``units<suffix>`` (e.g. ``units.errors.jsonl``)."""
    out = Path(output)
    return out.with_name(out.stem + suffix) if out.suffix else out.with_name(out.name + suffix)


def _record_path(line: str, number: int, source: Path) -> str:
    """The path of one complete record line, read without parsing the (possibly huge) units list."""
    where = f"{source}:{number}"
    if not line.startswith(RECORD_PREFIX) or not line.rstrip("\n").endswith("}"):
        raise SettingsError(f"{where}: not a record audiotok wrote; refusing to resume into it "
                            "(use another -o, or --overwrite)")
    try:
        path, end = json.decoder.scanstring(line, len(RECORD_PREFIX))
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{where}: a damaged record ({exc.msg}); refusing to resume into it "
                            "(use another -o, or --overwrite)") from None
    if not line.startswith(RECORD_UNITS, end):
        raise SettingsError(f"{where}: not a record audiotok wrote; refusing to resume into it "
                            "(use another -o, or --overwrite)")
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
            try:
                line = raw.decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                raise SettingsError(f"{path}:{number}: not valid UTF-8, so not a record audiotok wrote; refusing "
                                    "to resume into it (use another -o, or --overwrite)") from None
            done.add(_record_path(line, number, path))
            intact += len(raw)
    size = path.stat().st_size
    return done, intact, size - intact


def is_records(content: bytes) -> bool:
    """Whether ``content`` (a file's first bytes) is audiotok jsonl records; the last line may be cut short."""
    lines = content.split(b"\n")
    return all(line.startswith(RECORD_PREFIX.encode()) for line in lines[:-1] if line) and (
        not lines[-1] or lines[-1].startswith(RECORD_PREFIX.encode()[:len(lines[-1])]))


def is_error_list(content: bytes) -> bool:
    """Whether ``content`` is an errors file audiotok wrote: ``{"path", "error"}`` per line."""
    for line in content.decode("utf-8").splitlines():
        entry = json.loads(line)
        if not isinstance(entry, dict) or set(entry) != {"path", "error"} or not all(
                isinstance(v, str) for v in entry.values()):
            return False
    return True


def check_run_file(data: dict, source: Path) -> dict:
    """The run file's fields, checked against :data:`RUN_FIELDS`; an error names the file and field."""
    for key, types in RUN_FIELDS.items():
        value = data.get(key)
        if key not in data or not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise OutputError(f"{source}: {key!r} is {json.dumps(value)[:40] if key in data else 'missing'} "
                              f"where audiotok writes {expected}: not a run file audiotok wrote")
    return data


def is_run_file(content: bytes) -> bool:
    data = json.loads(content.decode("utf-8"))
    if not isinstance(data, dict):
        return False
    try:
        check_run_file(data, Path())
    except OutputError:
        return False
    return True


class ResumableJsonl(UnitWriter):
    """``write(path, units)`` appends one flushed record; ``done`` holds the paths already in the file.

    Construction locks the output and checks every file it would touch; a refusal changes nothing.
    ``abort`` is ``close``: the records of finished files are the point of a resumable output, so a
    failed or interrupted run keeps them (and lists its failures) for the next run to build on.
    """

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
        self._stream: IO[str] | None = None  # opened at the first record: a run that never starts writes nothing
        self._synced = time.monotonic()
        self._lock = OutputLock(self.path)
        try:
            self.fresh = overwrite or self.path.stat().st_size == 0
            self._check_side_files()
            if not self.fresh:
                self._resume()
        except BaseException:
            self._lock.release(remove=self._lock.created)
            raise

    def _check_side_files(self) -> None:
        """Stop before anything is written if a side file (or, with --overwrite, the output) is not ours."""
        check_side_file(self.errors_path, is_error_list, "an error list")
        if self.fresh:
            check_side_file(self.run_path, is_run_file, "a run file")
        if self.overwrite and self.path.stat().st_size > 0:
            if not (os.path.isfile(self.run_path) or is_records(read_head(self.path))):
                raise OutputError(f"{self.path} exists and does not hold audiotok records; --overwrite would "
                                  "replace it: move it away or choose another -o")

    def _open(self) -> IO[str]:
        if self.fresh:
            with atomic_path(self.run_path) as tmp:
                tmp.write_text(json.dumps(self.identity, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            with open(self.path, "r+b") as f:
                f.truncate(0)
            self.fresh = False
        return open(self.path, "a", encoding="utf-8")

    def _resume(self) -> None:
        if not self.run_path.exists():
            if not is_records(read_head(self.path)):
                raise SettingsError(f"{self.path} exists and does not hold audiotok records: choose another -o")
            raise SettingsError(f"{self.path} exists but {self.run_path.name} (what it was made with) is missing, "
                                "so it cannot be resumed safely: use another -o, or --overwrite")
        previous = check_run_file(read_json_object(self.run_path), self.run_path)
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

    def write(self, path: str, units: np.ndarray, offset: int | None = None) -> None:
        if path in self.done:  # engines never repeat a path; this guards the file's one-record-per-path promise
            return
        with writing(self.path):  # a full disk: one line; the records already flushed stay, a torn one is cut next run
            if self._stream is None:
                self._stream = self._open()
            self._stream.write(format_record(path, units, "jsonl", collapse=self.dedup, offset=offset) + "\n")
            self._stream.flush()
            self.done.add(path)
            self.written += 1
            if time.monotonic() - self._synced > FSYNC_INTERVAL_SECONDS:
                os.fsync(self._stream.fileno())
                self._synced = time.monotonic()

    def record_error(self, path: str, message: str) -> None:
        self.errors.append({"path": path, "error": message})

    def close(self) -> None:
        """Sync the records, write (or clear) this run's error list, and release the output."""
        try:
            if self._stream is None and self.fresh and self.overwrite and self.path.stat().st_size > 0:
                self._stream = self._open()  # --overwrite with nothing written still discards the old records
            if self._stream is not None and not self._stream.closed:
                with writing(self.path):
                    try:
                        self._stream.flush()
                        os.fsync(self._stream.fileno())
                    finally:
                        close_quietly(self._stream)
            if self.errors:
                with atomic_path(self.errors_path) as tmp:
                    tmp.write_text("".join(json.dumps(e) + "\n" for e in self.errors), encoding="utf-8")
            elif os.path.lexists(self.errors_path):
                check_side_file(self.errors_path, is_error_list, "an error list")  # ours: checked at the start
                self.errors_path.unlink()
        finally:
            # a run that wrote nothing leaves no empty output behind (the lock created it)
            self._lock.release(remove=self._lock.created and _is_empty(self.path))

    def abort(self) -> None:
        self.close()


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
