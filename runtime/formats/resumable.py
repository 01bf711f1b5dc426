"""A JSONL output that survives crashes: one line per file, appended and flushed, read back on restart.

A corpus run writes ``OUT.jsonl`` a record at a time, so a crash loses only the files in flight.
Starting the same command again reads ``OUT.jsonl`` back, skips every path it already holds, cuts
off a torn last line (a record whose write was interrupted) and appends the rest; no path is ever
written twice. Beside it:

* ``OUT.run.json``: everything that decides the records' units (the bundle's content hash, what its
  manifest says, every processor option stated or defaulted, ``--dedup``; see :mod:`.run_identity`),
  written before the first record. Resuming with anything different is refused, because mixing two
  unit definitions in one file is silent corruption; so is resuming a run file an older audiotok
  wrote, which does not record all of them (``--overwrite`` starts over).
* ``OUT.errors.jsonl``: ``{"path", "error"}`` for each file that failed in the last run (removed when
  none did). Failed files are not in ``OUT.jsonl``, so the next run retries them.

Records are matched by their ``path`` exactly as written, so resume with the same path arguments
(and, for relative paths, from the same folder). Each record carries its input's size and mtime: an
input that changed since is tokenized again, and the output is first rewritten without its old
record (staged beside it and renamed into place, the lock moving with it), so every path is still
in the file exactly once.

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
import re
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import SettingsError
from .base import UnitWriter
from .locks import OutputLock
from .records import format_record
from .run_identity import (RUN_FIELDS, UNIT_FIELDS, Source, check_types, input_source, missing_unit_fields,
                           settings_differences)
from .side_files import check_side_file, read_head, read_json_object
from .staging import OutputError, atomic_path, close_quietly, stage_beside, writing

RECORD_PREFIX = '{"path": "'  # how format_record starts every jsonl record
RECORD_UNITS = ', "units": ['  # what follows the path in every record
# How format_record ends a record that carries its input's identity.
RECORD_SOURCE = re.compile(r', "input_size": (\d{1,20}), "input_mtime_ns": (-?\d{1,24})\}$')
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


def _record_source(line: str) -> Source | None:
    """The ``(input_size, input_mtime_ns)`` a record ends with; None for a record without them."""
    found = RECORD_SOURCE.search(line.rstrip("\n")[-100:])
    return None if found is None else (int(found.group(1)), int(found.group(2)))


def scan_output(path: Path) -> tuple[dict[str, Source | None], int, int]:
    """(path -> its input's recorded identity for every record, byte length of the intact records, bytes
    of a torn tail to cut off).

    Only the last line can be torn: records are appended with one write each by one writer.
    """
    done: dict[str, Source | None] = {}
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
            done[_record_path(line, number, path)] = _record_source(line)
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
    """The run file's fields, checked against :data:`RUN_FIELDS` (all there) and :data:`UNIT_FIELDS`
    (those there: an older run file lacks them); an error names the file and field."""
    problem = check_types(data, RUN_FIELDS, source, required=True) or check_types(data, UNIT_FIELDS, source,
                                                                                  required=False)
    if problem:
        raise OutputError(problem)
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
        self.recorded: dict[str, Source | None] = {}  # path -> its input's identity when its record was written
        self.sources: dict[str, Source | None] = {}  # path -> its input's identity before this run read it
        self.redone = 0  # records dropped because their input changed
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
            # Old records go first, then the run file names the new settings: killed in between, an
            # empty output starts afresh; the other order would leave old records under new settings.
            with open(self.path, "r+b") as f:
                f.truncate(0)
            with atomic_path(self.run_path) as tmp:
                tmp.write_text(json.dumps(self.identity, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            self.fresh = False
        return open(self.path, "a", encoding="utf-8")

    def _resume(self) -> None:
        if not self.run_path.exists():
            if not is_records(read_head(self.path)):
                raise SettingsError(f"{self.path} exists and does not hold audiotok records: choose another -o")
            raise SettingsError(f"{self.path} exists but {self.run_path.name} (what it was made with) is missing, "
                                "so it cannot be resumed safely: use another -o, or --overwrite")
        previous = check_run_file(read_json_object(self.run_path), self.run_path)
        missing = missing_unit_fields(previous)
        if missing:
            raise SettingsError(f"{self.run_path} was written by an older audiotok and does not record "
                                f"{', '.join(missing)}, so this resume cannot be proven the same job: "
                                "--overwrite to start over, or use another -o")
        differences = settings_differences(previous, self.identity)
        if differences:
            raise SettingsError(f"{self.path} was made with other settings ({differences[0]}), not these "
                                f"({differences[1]}); resuming would mix them: use another -o, or --overwrite "
                                "to start over")
        self.recorded, intact, torn = scan_output(self.path)
        self.done = set(self.recorded)
        if torn:
            with open(self.path, "r+b") as f:
                f.truncate(intact)
            self.repaired_bytes = torn

    def todo(self, paths: list[str]) -> list[str]:
        """The paths still to tokenize: those without a record, and those whose input changed since its
        record was written (their old records are dropped first, so each path stays in the file once).

        Each input's size and mtime are taken here, before any worker reads it: a file that changes
        during the run is recorded with its older identity, so the next resume tokenizes it again.
        """
        self.sources = {path: input_source(path) for path in paths}
        stale = {p for p in paths if p in self.recorded and (self.recorded[p] is None
                                                              or self.recorded[p] != self.sources[p])}
        if stale:
            self._drop_records(stale)
        return [p for p in paths if p not in self.done]

    def _drop_records(self, stale: set[str]) -> None:
        """Rewrite the output without ``stale``'s records: staged beside it, then renamed onto it, the
        lock taken on the new file first, so a reader or a second run never sees a half-rewritten one."""
        staged = stage_beside(self.path)
        try:
            with open(self.path, "rb") as source, open(staged, "wb") as target:
                for number, raw in enumerate(source, start=1):
                    if _record_path(raw.decode("utf-8"), number, self.path) not in stale:
                        target.write(raw)
                target.flush()
                os.fsync(target.fileno())
            self._lock.replace_with(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        self.done -= stale
        for path in stale:
            self.recorded.pop(path, None)
        self.redone = len(stale)
    def write(self, path: str, units: np.ndarray, offset: int | None = None) -> None:
        if path in self.done:  # engines never repeat a path; this guards the file's one-record-per-path promise
            return
        with writing(self.path):  # a full disk: one line; the records already flushed stay, a torn one is cut next run
            if self._stream is None:
                self._stream = self._open()
            record = format_record(path, units, "jsonl", collapse=self.dedup, offset=offset,
                                   source=self.sources.get(path))
            self._stream.write(record + "\n")
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

    def release(self) -> None:
        """Let go of the output before any record was written (a run refused while planning)."""
        self._lock.release(remove=self._lock.created and _is_empty(self.path))


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
