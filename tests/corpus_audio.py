"""Corpora for the corpus-scale tests: many files cut from the generated speech, each one different."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_corpus(folder: Path, speech_16k: np.ndarray, *, files: int, seconds: float, seed: int = 0) -> list[Path]:
    """``files`` 16 kHz PCM-16 wavs of ``seconds`` each: speech from a random offset, a little noise added."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(seconds * 16_000)
    looped = np.tile(speech_16k, int(np.ceil(2 * n / len(speech_16k))) + 1)
    paths = []
    for i in range(files):
        start = int(rng.integers(0, len(looped) - n))
        clip = looped[start:start + n] + 0.003 * rng.standard_normal(n).astype(np.float32)
        path = folder / f"{i // 10:02d}" / f"file{i:03d}.wav"  # nested: folders are searched recursively
        path.parent.mkdir(exist_ok=True)
        sf.write(path, np.clip(clip, -1, 1), 16_000, subtype="PCM_16")
        paths.append(path)
    return paths
