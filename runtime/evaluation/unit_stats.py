"""How a vocabulary is used: units used of k, perplexity, entropy, bitrate, run length.

Counts are pooled over every file (each frame weighs the same), so a corpus's numbers do not depend
on how it is split into files. Bitrate follows the GSLM/"speech resynthesis" convention: the
entropy of the unit distribution times the number of units per second, before deduplication (50
units/s) and after it (runs of one unit collapsed into one, the stream a unit language model reads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..constants import FRAME_SECONDS
from ..unit_runs import dedup


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of the distribution given by ``counts`` (zeros ignored)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0 in reports


@dataclass(frozen=True)
class UnitStats:
    frames: int
    k: int
    units_used: int  # distinct units that occur at least once
    entropy_bits: float  # per frame
    perplexity: float  # 2 ** entropy: the number of equally used units with the same entropy
    bitrate: float  # bits per second, one unit per 20 ms frame
    dedup_units: int  # units after collapsing runs
    dedup_entropy_bits: float  # per deduplicated unit
    dedup_bitrate: float  # bits per second of deduplicated units
    mean_run_frames: float  # frames per run of one unit

    def as_dict(self) -> dict:
        return asdict(self)


class UnitCounter:
    """Accumulates unit counts file by file; :meth:`stats` summarises them."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.frame_counts = np.zeros(k, np.int64)
        self.run_counts = np.zeros(k, np.int64)

    def add(self, units: np.ndarray) -> None:
        units = np.asarray(units, dtype=np.int64)
        self.frame_counts += np.bincount(units, minlength=self.k)[: self.k]
        self.run_counts += np.bincount(dedup(units)[0], minlength=self.k)[: self.k]

    def stats(self) -> UnitStats:
        frames, runs = int(self.frame_counts.sum()), int(self.run_counts.sum())
        seconds = frames * FRAME_SECONDS
        h, h_dedup = entropy_bits(self.frame_counts), entropy_bits(self.run_counts)
        return UnitStats(
            frames=frames, k=self.k, units_used=int((self.frame_counts > 0).sum()),
            entropy_bits=h, perplexity=float(2.0 ** h), bitrate=h / FRAME_SECONDS if frames else 0.0,
            dedup_units=runs, dedup_entropy_bits=h_dedup,
            dedup_bitrate=h_dedup * runs / seconds if frames else 0.0,
            mean_run_frames=frames / runs if runs else 0.0,
        )
