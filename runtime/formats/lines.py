"""txt, jsonl and fairseq lines in one file (or on stdout), staged and renamed into place when complete."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import SettingsError
from .base import UnitWriter
from .records import check_record_path, fairseq_record, format_record
from .staging import OutputError, close_quietly, replace_into, stage_beside, writing


class LineWriter(UnitWriter):
    """txt, jsonl or fairseq lines, to stdout (``-``) or atomically to a file."""

    def __init__(self, output: str | os.PathLike | None, fmt: str, *, dedup: bool = False) -> None:
        if fmt not in ("txt", "jsonl", "fairseq"):
            raise SettingsError(f"--format {fmt}: not a line format")
        self.fmt, self.dedup = fmt, dedup
        self._stems: dict[str, str] = {}
        if output in (None, "-"):
            self._target = self._staged = None
            self._stream: IO[str] = sys.stdout
        else:
            self._target = Path(output)
            self._staged = stage_beside(self._target, folder=False)
            try:
                with writing(self._target):
                    self._stream = open(self._staged, "w", encoding="utf-8")
            except BaseException:
                self._staged.unlink(missing_ok=True)
                raise

    def write(self, path: str, units: np.ndarray, offset: int | None = None) -> None:
        if self.fmt != "jsonl":  # jsonl escapes every name (see records.py), on stdout as in a file
            check_record_path(Path(path).stem if self.fmt == "fairseq" else path, self.fmt)
        if self.fmt == "fairseq":
            stem = Path(path).stem
            if "|" in stem:
                raise OutputError(f"{path}: a fairseq unit file cannot hold a name containing '|'")
            if stem in self._stems:
                raise OutputError(f"{path} and {self._stems[stem]} have the same stem {stem!r}: fairseq unit files "
                                  f"name utterances by stem; rename one or use --format jsonl")
            self._stems[stem] = path
            line = fairseq_record(path, units, collapse=self.dedup)
        else:
            line = format_record(path, units, self.fmt, collapse=self.dedup, offset=offset)
        with writing(self._where):
            self._stream.write(line + "\n")
            if self._staged is None:
                self._stream.flush()  # stdout: let a pipe see each file as soon as it is done

    @property
    def _where(self) -> str | Path:
        return "stdout" if self._target is None else self._target

    def close(self) -> None:
        try:
            with writing(self._where):
                if self._staged is None:
                    self._stream.flush()
                    return
                self._stream.close()
            replace_into(self._staged, self._target)
        except BaseException:
            self.abort()  # also when close is called outside a with block
            raise

    def abort(self) -> None:
        if self._staged is not None:
            close_quietly(self._stream)
            self._staged.unlink(missing_ok=True)
