"""Training audio: which files, and how much of them."""

from __future__ import annotations

from pathlib import Path

from audiotok.runtime.audio import find_audio_files
from audiotok.runtime.errors import AudioError


def training_files(paths: list[str]) -> list[Path]:
    """Files and folders (recursive: wav, flac, ogg, mp3, ...) as a sorted list; none is an error."""
    files = find_audio_files(paths)
    if not files:
        raise AudioError(f"no audio files found in {', '.join(paths)} (looked for wav, flac, ogg, mp3, ...)")
    return files
