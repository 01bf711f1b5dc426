"""Two unit sequences of the same audio compared: frame agreement and unit edit distance (UED).

UED follows Gat et al. 2022 ("augmentation invariant discrete representation"): the Levenshtein
distance between the two *deduplicated* sequences divided by the length of the first (reference)
one. It counts units a language model would read differently, and it is defined when the two
sequences have different lengths (speed changes). rapidfuzz computes it in C++; a Python loop over
two 10,000-unit files would be 10^8 steps.

Frame agreement is the share of frames with the same unit on a common frame grid: frame i against
frame i + ``offset`` of the other, over the frames both have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import Levenshtein

from ..unit_runs import dedup


@dataclass(frozen=True)
class Comparison:
    """One file, or a total: ``ued = edits / reference_units``; ``agreement = equal / frames``."""

    edits: int  # Levenshtein distance between the deduplicated sequences
    reference_units: int  # length of the deduplicated reference
    equal: int  # frames with the same unit on the common grid
    frames: int  # frames on the common grid (0 when the grids are not comparable)

    @property
    def ued(self) -> float | None:
        return self.edits / self.reference_units if self.reference_units else None

    @property
    def agreement(self) -> float | None:
        return self.equal / self.frames if self.frames else None

    def __add__(self, other: Comparison) -> Comparison:
        return Comparison(self.edits + other.edits, self.reference_units + other.reference_units,
                          self.equal + other.equal, self.frames + other.frames)

    def as_dict(self) -> dict:
        return {"ued": self.ued, "agreement": self.agreement, "edits": self.edits,
                "reference_units": self.reference_units, "frames": self.frames}


NOTHING = Comparison(0, 0, 0, 0)


def unit_edit_distance(reference: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """(edits, reference length) between the deduplicated sequences."""
    ref, oth = dedup(reference)[0], dedup(other)[0]
    return int(Levenshtein.distance(ref.tolist(), oth.tolist())), len(ref)


def frame_agreement(reference: np.ndarray, other: np.ndarray, offset: int = 0) -> tuple[int, int]:
    """(equal frames, frames compared): ``reference[i + offset]`` against ``other[i]``."""
    ref = reference[offset:] if offset >= 0 else reference
    oth = other if offset >= 0 else other[-offset:]
    n = min(len(ref), len(oth))
    return int(np.count_nonzero(ref[:n] == oth[:n])), n


def compare(reference: np.ndarray, other: np.ndarray, *, offset: int | None = 0) -> Comparison:
    """UED always; frame agreement when the grids line up (``offset`` None: they do not)."""
    edits, length = unit_edit_distance(reference, other)
    equal, frames = (0, 0) if offset is None else frame_agreement(reference, other, offset)
    return Comparison(edits, length, equal, frames)
