"""Operations on unit sequences."""

from __future__ import annotations

import numpy as np


def dedup(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse runs of the same unit (the GSLM "deduplicated" units) and return run lengths in frames."""
    units = np.asarray(units)
    if units.size == 0:
        return units.astype(np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, units[1:] != units[:-1]])
    lengths = np.diff(np.r_[starts, units.size])
    return units[starts].astype(np.int64), lengths.astype(np.int64)
