"""Tokenizing one corpus file inside an engine's worker: units, or the reason there are none."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .constants import FRAME_SECONDS
from .corpus import CorpusFile
from .errors import AudiotokError
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class FileResult:
    """What a worker sends back for one file: its units, or an error message (one line)."""

    path: str
    units: np.ndarray | None
    error: str | None = None

    @property
    def seconds(self) -> float:
        """Audio duration on the frame grid (what the progress bar counts as hours done)."""
        return 0.0 if self.units is None else len(self.units) * FRAME_SECONDS


class TokenizeWorker:
    """One bundle loaded in one process; ``worker(file)`` never raises for a bad file."""

    def __init__(self, bundle: str | os.PathLike | None = None, *, providers: list[str] | None = None,
                 threads: int | None = None, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer or Tokenizer(bundle, providers=providers, threads=threads)

    def __call__(self, item: CorpusFile) -> FileResult:
        try:
            return FileResult(item.path, self.tokenizer.tokenize(item.path))
        except AudiotokError as exc:
            return FileResult(item.path, None, str(exc))
        except Exception as exc:  # a decoder or onnxruntime failure on one file must not end a corpus run
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return FileResult(item.path, None, f"{item.path}: {type(exc).__name__}: {detail}".rstrip(": "))
