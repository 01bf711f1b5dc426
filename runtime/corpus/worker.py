"""Tokenizing one corpus file inside an engine's worker: units, or the reason there are none."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..constants import FRAME_SECONDS
from ..errors import AudiotokError, BundleError
from ..tokenizer import Tokenizer
from .listing import CorpusFile


@dataclass(frozen=True)
class FileResult:
    """What a worker sends back for one file: its units, or an error message (one line)."""

    path: str
    units: np.ndarray | None
    error: str | None = None
    offset: int | None = None  # with --trim-silence: the 16 kHz sample the first unit starts at

    @property
    def seconds(self) -> float:
        """Audio duration on the frame grid (what the progress bar counts as hours done)."""
        return 0.0 if self.units is None else len(self.units) * FRAME_SECONDS


class TokenizeWorker:
    """One bundle loaded in one process; ``worker(file)`` never raises for a bad file, only for a bad bundle."""

    def __init__(self, bundle: str | os.PathLike | None = None, *, providers: list[str] | None = None,
                 threads: int | None = None, max_pass_seconds: float | None = None,
                 tokenizer: Tokenizer | None = None, channel: int | str | None = None,
                 trim_db: float | None = None) -> None:
        self.tokenizer = tokenizer or Tokenizer(bundle, providers=providers, threads=threads,
                                                max_pass_seconds=max_pass_seconds, channel=channel, trim_db=trim_db)

    def __call__(self, item: CorpusFile) -> FileResult:
        try:
            units, offset = self.tokenizer.tokenize_with_offset(item.path)
            return FileResult(item.path, units, offset=offset if self.tokenizer.preprocess.trim_db else None)
        except BundleError:  # the bundle is broken, not this file: the run stops with the bundle's name
            raise
        except AudiotokError as exc:
            return FileResult(item.path, None, str(exc))
        except Exception as exc:  # a decoder or onnxruntime failure on one file must not end a corpus run
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return FileResult(item.path, None, f"{item.path}: {type(exc).__name__}: {detail}".rstrip(": "))
