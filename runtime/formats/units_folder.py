"""The ``npy`` output: a folder for large corpora, readable with numpy alone::

      units/meta.json          {"format": "audiotok-units", "k": ..., "dtype": "uint16", "dedup": ..., ...}
      units/index.tsv          path  shard  offset  length  frames   (header line, then one row per file)
      units/units-00000.npy    1-D, every file's units concatenated (uint16 when k <= 65536, else uint32)
      units/durations-00000.npy  with dedup only: frames per unit, aligned with units-*.npy (uint32)

File ``i``'s units are ``np.load(f"units-{shard:05d}.npy", mmap_mode="r")[offset:offset + length]``.
A file never spans two shards. The folder is built in a staging folder and renamed into place.

``-o FOLDER`` may name a new or empty folder, or a units folder audiotok wrote (a strict
``meta.json`` and only the files above); anything else is refused untouched. Replacing a units
folder deletes only its own files, by name.

A run killed mid-way leaves its staging folder ``.FOLDER.<16 hex>.tmp``; one killed during the swap
also leaves the previous folder hidden as ``.FOLDER.old-<pid>.tmp``. The next run to the same ``-o``
recognises both by name and content (only a units folder's own files) and removes them, except that
a hidden previous folder whose ``-o`` is gone is put back first. A staging folder is locked
(``flock``) while its run lives, so a run in progress is never taken for a leftover.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..constants import FRAME_SECONDS
from ..errors import SettingsError
from ..unit_runs import dedup as dedup_units
from .base import UnitWriter
from .locks import FolderLock, try_lock
from .records import check_record_path
from .side_files import read_json_object
from .staging import OutputError, close_quietly, replace_into, stage_beside, staged_name, staged_name_pattern, writing

FOLDER_FORMAT = "audiotok-units"  # meta.json "format" of an npy units folder
FOLDER_VERSION = 1
SHARD_UNITS = 16 * 1024 * 1024  # units per shard before a new one starts: 32 MiB as uint16, ~93 h at 50 Hz
INDEX_COLUMNS = ("path", "shard", "offset", "length", "frames")
OWN_FILES = re.compile(r"meta\.json|index\.tsv|(units|durations)-\d{5}\.npy")  # all a units folder holds


def unit_dtype(k: int) -> np.dtype:
    """The smallest unsigned type holding unit ids ``0..k-1``."""
    return np.dtype(np.uint16) if k <= 2**16 else np.dtype(np.uint32)


class NpyShardWriter(UnitWriter):
    """The ``npy`` folder (see the module docstring), built in a staging folder and renamed into place."""

    def __init__(self, folder: str | os.PathLike | None, *, k: int, dedup: bool = False,
                 shard_units: int = SHARD_UNITS) -> None:
        if folder in (None, "-"):
            raise SettingsError("--format npy writes a folder of shards: give -o FOLDER")
        self._target = Path(folder)
        check_replaceable_folder(self._target)
        self.k, self.dedup, self.shard_units = int(k), dedup, int(shard_units)
        self.dtype = unit_dtype(self.k)
        remove_folder_leftovers(self._target)
        self._staged = stage_beside(self._target, folder=True)
        self._held: int | None = None
        try:
            self._held = try_lock(self._staged)  # a live run's staging folder is not a leftover
            with writing(self._target):
                self._index = open(self._staged / "index.tsv", "w", encoding="utf-8")
                self._index.write("\t".join(INDEX_COLUMNS) + "\n")
        except BaseException:
            self._unhold()
            shutil.rmtree(self._staged, ignore_errors=True)
            raise
        self._units: list[np.ndarray] = []
        self._durations: list[np.ndarray] = []
        self._shard, self._offset, self._files, self._total = 0, 0, 0, 0

    def write(self, path: str, units: np.ndarray, offset: int | None = None) -> None:  # npy keeps no offsets
        check_record_path(path, "npy")
        units = np.asarray(units)
        if units.size and (units.min() < 0 or units.max() >= self.k):
            raise OutputError(f"{path}: unit ids outside 0..{self.k - 1}")
        frames = len(units)
        if self.dedup:
            units, durations = dedup_units(units)
            self._durations.append(durations.astype(np.uint32))
        self._units.append(units.astype(self.dtype))
        with writing(self._target):
            self._index.write(f"{path}\t{self._shard}\t{self._offset}\t{len(units)}\t{frames}\n")
            self._offset += len(units)
            self._files += 1
            self._total += len(units)
            if self._offset >= self.shard_units:
                self._flush_shard()

    def _flush_shard(self) -> None:
        np.save(self._staged / f"units-{self._shard:05d}.npy", np.concatenate(self._units).astype(self.dtype))
        if self.dedup:
            np.save(self._staged / f"durations-{self._shard:05d}.npy",
                    np.concatenate(self._durations).astype(np.uint32))
        self._units, self._durations = [], []
        self._shard, self._offset = self._shard + 1, 0

    def close(self) -> None:
        with writing(self._target):
            if self._units:
                self._flush_shard()
            self._index.close()
            meta = {"format": FOLDER_FORMAT, "version": FOLDER_VERSION, "k": self.k, "dtype": self.dtype.name,
                    "dedup": self.dedup, "files": self._files, "units": self._total, "shards": self._shard,
                    "frame_seconds": FRAME_SECONDS}
            (self._staged / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            with FolderLock(self._target.parent):  # two runs committing to one folder take turns
                check_replaceable_folder(self._target)  # again: it may have changed during the run
                old = None
                if os.path.lexists(self._target):  # a previous units folder (or an empty one): swap it out
                    old = old_folder_name(self._target)
                    replace_into(self._target, old)
                try:
                    replace_into(self._staged, self._target)
                except BaseException:
                    if old is not None:
                        os.replace(old, self._target)  # put the previous folder back as it was
                    raise
        except BaseException:
            self.abort()
            raise
        self._unhold()
        if old is not None:
            remove_units_folder(old)

    def abort(self) -> None:
        close_quietly(self._index)
        self._unhold()
        shutil.rmtree(self._staged, ignore_errors=True)  # the staging folder: audiotok made all of it

    def _unhold(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None


def old_folder_name(target: Path) -> Path:
    """Where the previous units folder waits while the new one is renamed into place."""
    return target.with_name(staged_name(target, f"old-{os.getpid()}"))


def remove_folder_leftovers(target: Path) -> None:
    """Remove what runs killed before they committed to ``target`` left beside it (module docstring).

    Staging folders ``.NAME.<16 hex>.tmp`` and hidden previous folders ``.NAME.old-<pid>.tmp`` count only
    when they hold nothing but a units folder's own files; a staging folder another run still holds
    locked is skipped; a hidden previous folder is put back when ``target`` itself is gone.
    """
    parent = target.parent
    staging = staged_name_pattern(target, r"[0-9a-f]{16}")
    hidden = staged_name_pattern(target, r"old-\d+")
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return
    with FolderLock(parent):  # a run swapping its folder in right now holds this
        for name in names:
            path = parent / name
            if not (staging.fullmatch(name) or hidden.fullmatch(name)) or not _only_own_files(path):
                continue
            try:
                if hidden.fullmatch(name) and not os.path.lexists(target) and _units_meta_problem(path) is None:
                    os.replace(path, target)  # killed between the two renames: the previous output, back
                    continue
                held = try_lock(path)
                if held is None:
                    continue  # a live run's staging folder
                try:
                    remove_units_folder(path)
                finally:
                    os.close(held)
            except OSError:
                continue  # cleaning is best effort: a leftover that cannot be removed stays, harmless


def _only_own_files(folder: Path) -> bool:
    """A real folder holding only regular files a units folder holds (index.tsv, meta.json, shards)."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        return all(OWN_FILES.fullmatch(e) and (folder / e).is_file() and not (folder / e).is_symlink()
                   for e in os.listdir(folder))
    except OSError:
        return False


def check_replaceable_folder(target: Path) -> None:
    """Refuse an npy ``-o`` that is not new, empty, or a units folder audiotok wrote (nothing is touched).

    A corpus folder, a dataset with its own ``meta.json``, the current folder: replacing any of them
    would delete what audiotok did not write.
    """
    try:
        here = Path.cwd().resolve()
    except OSError:  # the current folder was deleted: nothing to protect there
        here = None
    if here is not None and target.resolve() in (here, *here.parents):
        raise OutputError(f"-o {target}: is the current folder or holds it; give a new folder name")
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"-o {target}: exists and is not a folder; give a new folder name")
    entries = sorted(os.listdir(target))
    if not entries:
        return
    foreign = next((e for e in entries if not OWN_FILES.fullmatch(e) or not (target / e).is_file()
                    or (target / e).is_symlink()), None)
    reason = f"it holds {ascii(foreign)}" if foreign else _units_meta_problem(target)
    if reason:
        raise OutputError(f"-o {target}: exists and is not an audiotok units folder ({reason}); nothing was "
                          "changed: give a new folder name")


def _units_meta_problem(folder: Path) -> str | None:
    """Why ``folder/meta.json`` is not the one an npy writer wrote, or None when it is."""
    try:
        meta = read_json_object(folder / "meta.json")
    except OutputError:
        return "no meta.json audiotok wrote"
    if meta.get("format") != FOLDER_FORMAT or meta.get("version") != FOLDER_VERSION:
        return f"meta.json is not {FOLDER_FORMAT} v{FOLDER_VERSION}"
    return None


def remove_units_folder(folder: Path) -> None:
    """Delete a units folder's own files by name, then the folder if that left it empty."""
    for entry in os.listdir(folder):
        if OWN_FILES.fullmatch(entry):
            (folder / entry).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else appeared in it: leave it


def read_units_folder(folder: str | os.PathLike) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(path, units, durations or None)`` per file of an ``npy`` folder, in the order written.

    A units folder may come from someone else, so it is read as untrusted: the meta file is bounded,
    every index row is checked (fields, integers, its span inside its shard), shards are loaded
    memory-mapped and never with pickle. A bad folder is one OutputError naming the file and line.
    """
    folder = Path(folder)
    try:
        meta = read_json_object(folder / "meta.json")
    except OutputError as exc:
        raise OutputError(f"{folder}: not an audiotok units folder ({exc})") from None
    if meta.get("format") != FOLDER_FORMAT or meta.get("version") != FOLDER_VERSION:
        raise OutputError(f"{folder}: units folder format {meta.get('format')!r} v{meta.get('version')!r} is not "
                          f"{FOLDER_FORMAT} v{FOLDER_VERSION}")
    dedup = meta.get("dedup")
    if not isinstance(dedup, bool):
        raise OutputError(f"{folder / 'meta.json'}: 'dedup' must be true or false")
    shards: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    try:
        index = open(folder / "index.tsv", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{folder / 'index.tsv'}: cannot read it ({exc.strerror})") from None
    with index:
        for number, line in enumerate(index, start=1):
            where = f"{folder / 'index.tsv'}:{number}"
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(INDEX_COLUMNS):
                raise OutputError(f"{where}: expected {len(INDEX_COLUMNS)} tab-separated fields, got {len(fields)}")
            if number == 1:
                if tuple(fields) != INDEX_COLUMNS:
                    raise OutputError(f"{where}: not the header {' '.join(INDEX_COLUMNS)}")
                continue
            path, numbers = fields[0], fields[1:4]
            if not all(n.isascii() and n.isdigit() and len(n) <= 18 for n in numbers):
                raise OutputError(f"{where}: shard, offset and length must be non-negative integers")
            shard, offset, length = map(int, numbers)
            if shard not in shards:
                units = _load_shard(folder / f"units-{shard:05d}.npy", where)
                durations = _load_shard(folder / f"durations-{shard:05d}.npy", where) if dedup else None
                if durations is not None and len(durations) != len(units):
                    raise OutputError(f"{where}: shard {shard}'s durations and units differ in length")
                shards = {shard: (units, durations)}  # files are in shard order: keep one shard open
            units, durations = shards[shard]
            if offset + length > len(units):
                raise OutputError(f"{where}: units {offset}..{offset + length} lie outside shard {shard} "
                                  f"({len(units)} units)")
            piece = slice(offset, offset + length)
            yield path, np.asarray(units[piece]), None if durations is None else np.asarray(durations[piece])


def _load_shard(path: Path, where: str) -> np.ndarray:
    """A 1-D unsigned-integer shard, memory-mapped (a huge shard costs no memory until read), no pickle."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise OutputError(f"{where}: cannot read {path.name} ({exc})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind != "u":
        raise OutputError(f"{where}: {path.name} is not a 1-D array of unsigned unit ids")
    return array
