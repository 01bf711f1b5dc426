"""Training audio: which files (folders, files and @file lists, as ``tokenize`` reads them)."""

from __future__ import annotations

from audiotok.runtime.corpus.listing import CorpusFile, list_corpus
from audiotok.runtime.errors import AudioError


def training_files(paths: list[str]) -> list[CorpusFile]:
    """Files, folders (recursive: wav, flac, ogg, mp3, ...) and @file lists as one list; none is an error."""
    files = list_corpus(paths)
    if not files:
        raise AudioError(f"no audio files found in {', '.join(paths)} (looked for wav, flac, ogg, mp3, ...)")
    return files
