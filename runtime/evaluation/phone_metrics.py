"""How well units match phones: PNMI, phone purity and cluster purity (the HuBERT paper's measures).

All three come from one table of counts, phones x units, over labelled frames (each frame weighs
the same):

* PNMI, phone-normalised mutual information: I(phone; unit) / H(phone), the fraction of the
  uncertainty about the phone that knowing the unit removes (1: units determine phones; 0:
  independent).
* phone purity: for each unit, the share of its frames that carry its most frequent phone,
  averaged over units weighted by their frames (= sum of column maxima / frames).
* cluster purity: for each phone, the share of its frames that fall in its most frequent unit,
  averaged over phones weighted by their frames (= sum of row maxima / frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .unit_stats import entropy_bits


def pnmi(table: np.ndarray) -> float | None:
    """I(phone; unit) / H(phone) of a phones x units count table; None when H(phone) is 0."""
    table = np.asarray(table, dtype=np.float64)
    h_phone = entropy_bits(table.sum(axis=1))
    if h_phone == 0.0:
        return None  # one phone (or none): nothing to explain
    mutual = h_phone + entropy_bits(table.sum(axis=0)) - entropy_bits(table.ravel())
    return float(np.clip(mutual / h_phone, 0.0, 1.0))


def phone_purity(table: np.ndarray) -> float | None:
    table = np.asarray(table)
    total = table.sum()
    return float(table.max(axis=0).sum() / total) if total else None


def cluster_purity(table: np.ndarray) -> float | None:
    table = np.asarray(table)
    total = table.sum()
    return float(table.max(axis=1).sum() / total) if total else None


@dataclass(frozen=True)
class AlignmentScores:
    pnmi: float | None
    phone_purity: float | None
    cluster_purity: float | None
    frames: int  # labelled frames scored
    unlabelled_frames: int  # frames at no labelled interval, left out
    phones: int  # distinct labels seen


class PhoneUnitCounts:
    """The phones x units table, grown file by file; phones keep their order of first appearance."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.phones: list[str] = []
        self._index: dict[str, int] = {}
        self.table = np.zeros((0, k), np.int64)
        self.unlabelled = 0

    def add(self, labels: Sequence[str | None], units: np.ndarray) -> None:
        """Count one file: ``labels[i]`` is frame i's phone (None: unlabelled), ``units[i]`` its unit."""
        n = min(len(labels), len(units))
        rows = np.array([self._row(lab) for lab in labels[:n]], np.int64)
        labelled = rows >= 0
        self.unlabelled += int((~labelled).sum())
        if len(self.phones) > len(self.table):
            self.table = np.vstack([self.table, np.zeros((len(self.phones) - len(self.table), self.k), np.int64)])
        np.add.at(self.table, (rows[labelled], np.asarray(units[:n], np.int64)[labelled]), 1)

    def _row(self, label: str | None) -> int:
        if label is None:
            return -1
        if label not in self._index:
            self._index[label] = len(self.phones)
            self.phones.append(label)
        return self._index[label]

    def scores(self) -> AlignmentScores:
        return AlignmentScores(pnmi=pnmi(self.table), phone_purity=phone_purity(self.table),
                               cluster_purity=cluster_purity(self.table), frames=int(self.table.sum()),
                               unlabelled_frames=self.unlabelled, phones=len(self.phones))
