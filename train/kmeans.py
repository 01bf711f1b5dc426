"""k-means units: scikit-learn MiniBatchKMeans with the GSLM recipe's settings, plus the statistics
that tell a user whether the vocabulary is healthy (inertia, clusters used, unit perplexity)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from contextlib import redirect_stdout
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from tqdm import tqdm


@dataclass(frozen=True)
class KMeansConfig:
    """Defaults follow fairseq's GSLM ``learn_kmeans.py``."""

    k: int
    batch_size: int = 10_000
    n_init: int = 20
    max_iter: int = 100
    max_no_improvement: int = 100
    reassignment_ratio: float = 0.0
    tol: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class UnitStats:
    inertia: float  # sum of squared distances of all frames to their centroid
    mean_squared_distance: float
    clusters_used: int  # centroids that at least one training frame is nearest to
    perplexity: float  # exp(entropy) of the unit distribution; k at best


class _SklearnProgress(io.TextIOBase):
    """Turns MiniBatchKMeans' verbose lines into a progress bar (scikit-learn has no callback)."""

    _init = re.compile(r"Init (\d+)/(\d+)")
    _step = re.compile(r"Minibatch step (\d+)/(\d+)")

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def write(self, text: str) -> int:
        if m := self._step.search(text):
            step, total = int(m.group(1)), int(m.group(2))
            if self.bar.total != total:
                self.bar.reset(total=total)
                self.bar.set_description("k-means steps")
            self.bar.update(step - self.bar.n)
        elif m := self._init.search(text):
            self.bar.set_description(f"k-means++ init {m.group(1)}/{m.group(2)}")
        return len(text)


def fit_kmeans(features: np.ndarray, config: KMeansConfig) -> np.ndarray:
    """Fit from scratch; the same features and seed give the same centroids. Returns ``[k, dim]`` float32."""
    km = MiniBatchKMeans(
        n_clusters=config.k, init="k-means++", max_iter=config.max_iter, batch_size=config.batch_size,
        tol=config.tol, max_no_improvement=config.max_no_improvement, n_init=config.n_init,
        reassignment_ratio=config.reassignment_ratio, random_state=config.seed, compute_labels=False,
        verbose=1,
    )
    with tqdm(desc="k-means++ init", unit="step", disable=None, leave=False) as bar:
        with redirect_stdout(_SklearnProgress(bar)):
            km.fit(features)
    return km.cluster_centers_.astype(np.float32)


def nearest(features: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and squared distance per frame, in chunks to bound memory."""
    c_sq = (centroids.astype(np.float64) ** 2).sum(1)
    labels = np.empty(len(features), np.int64)
    dist = np.empty(len(features), np.float64)
    for i in range(0, len(features), chunk):
        h = features[i:i + chunk].astype(np.float64)
        d = c_sq[None] - 2.0 * h @ centroids.T.astype(np.float64)
        labels[i:i + chunk] = d.argmin(1)
        dist[i:i + chunk] = np.maximum(d.min(1) + (h * h).sum(1), 0.0)
    return labels, dist


def unit_usage(chunks: Iterable[np.ndarray] | np.ndarray, centroids: np.ndarray) -> tuple[UnitStats, np.ndarray]:
    """Statistics of the units over features given in chunks (one shard in memory at a time) or one
    array, and how many frames each unit is nearest to (``[k]`` counts)."""
    if isinstance(chunks, np.ndarray):
        chunks = [chunks]
    counts = np.zeros(len(centroids), np.int64)
    total = 0.0
    for features in chunks:
        labels, dist = nearest(features, centroids)
        counts += np.bincount(labels, minlength=len(centroids))
        total += float(dist.sum())
    p = counts[counts > 0] / counts.sum()
    stats = UnitStats(
        inertia=total,
        mean_squared_distance=total / counts.sum(),
        clusters_used=int((counts > 0).sum()),
        perplexity=float(np.exp(-(p * np.log(p)).sum())),
    )
    return stats, counts
