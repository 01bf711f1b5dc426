"""k-means with faiss, audioTokenizer's way: ``faiss.Clustering`` on a sample of the feature cache.

audioTokenizer (``train_kmeans.py``) clusters with faiss: ``nredo`` 3, ``min_points_per_centroid``
5, ``niter`` from ``20 + 10 log10(k)`` (+10 when dim >= 512, +10 from 2M training vectors, clipped
to [30, 150]), on ``max(256 k, 100 000)`` vectors sampled from all it extracted. The defaults
below are those; every one can be overridden. Memory is bounded by the sample: its rows are
gathered from the cache's shards, never the whole cache. faiss-gpu, where installed with a GPU,
runs the assignment step on it.

Each of the ``nredo`` runs is its own ``Clustering`` (seed ``seed + run``) so that progress can
be shown; the one with the lowest final objective wins, which is what faiss' internal ``nredo``
does. Then ``write_faiss_index_to`` writes the centroids as an ``IndexFlatL2``, the file
audioTokenizer's own scripts search (``NAME.kmeans_faiss.index``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audiotok.runtime.errors import SettingsError

from .feature_cache import CachedFeatures

FAISS_EXTRA = "pip install 'audiotok[faiss]' (faiss-cpu; or faiss-gpu for a GPU)"
SAMPLE_PER_CENTROID = 256  # audioTokenizer samples max(256 k, 100 000) vectors ...
MIN_SAMPLE = 100_000  # ... to train on
INDEX_SUFFIX = ".kmeans_faiss.index"


def import_faiss():
    """faiss, or one line naming the extra that provides it."""
    try:
        import faiss
    except ImportError:
        raise SettingsError(f"--kmeans faiss and --write-faiss-index need faiss, which is not installed: "
                            f"{FAISS_EXTRA}") from None
    return faiss


def default_niter(n: int, dim: int, k: int) -> int:
    """audioTokenizer's ``estimate_niter``: more iterations for more clusters, wider features, more data."""
    base = 20 + 10 * math.log10(k)
    if dim >= 512:
        base += 10
    if n >= 2_000_000:
        base += 10
    return int(np.clip(base, 30, 150))


def default_sample(k: int) -> int:
    return max(SAMPLE_PER_CENTROID * k, MIN_SAMPLE)


@dataclass(frozen=True)
class FaissConfig:
    """audioTokenizer's settings; ``niter`` and ``sample`` None: derived from k, dim and the data."""

    k: int
    niter: int | None = None
    nredo: int = 3
    min_points_per_centroid: int = 5
    sample: int | None = None  # vectors sampled from the cache to train on
    seed: int = 0
    gpu: bool = True  # use a GPU when faiss-gpu sees one

    def check(self) -> None:
        if self.niter is not None and self.niter < 1:
            raise SettingsError(f"--faiss-niter must be at least 1, got {self.niter}")
        if self.nredo < 1:
            raise SettingsError(f"--faiss-nredo must be at least 1, got {self.nredo}")
        if self.min_points_per_centroid < 1:
            raise SettingsError(f"--faiss-min-points must be at least 1, got {self.min_points_per_centroid}")
        if self.sample is not None and self.sample < self.k:
            raise SettingsError(f"--faiss-sample must be at least --k ({self.k}), got {self.sample}")


def _index(faiss, dim: int, gpu: bool):
    index = faiss.IndexFlatL2(dim)
    if gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index), "gpu"
    return index, "cpu"


def sample_rows(features: CachedFeatures | np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows drawn without replacement (seeded), gathered shard by shard; all when fewer."""
    total = len(features) if isinstance(features, np.ndarray) else features.rows
    if count >= total:
        rows = np.arange(total)
    else:
        rows = np.sort(np.random.default_rng([seed, 1]).choice(total, count, replace=False))
    if isinstance(features, np.ndarray):
        return np.ascontiguousarray(features[rows], np.float32)
    return features.take(rows)


def fit_faiss(features: CachedFeatures | np.ndarray, config: FaissConfig) -> tuple[np.ndarray, dict]:
    """``[k, dim]`` float32 centroids, and what was run (sample size, niter, device, objective)."""
    faiss = import_faiss()
    config.check()
    data = sample_rows(features, config.sample or default_sample(config.k), config.seed)
    n, dim = data.shape
    niter = config.niter or default_niter(n, dim, config.k)
    best, best_obj, device = None, math.inf, "cpu"
    with tqdm(total=config.nredo, desc=f"faiss k-means ({niter} iterations)", unit="run", disable=None,
              leave=False) as bar:
        for run in range(config.nredo):
            params = faiss.ClusteringParameters()
            params.niter, params.nredo, params.seed = niter, 1, config.seed + run
            params.min_points_per_centroid = config.min_points_per_centroid
            params.verbose = False
            clustering = faiss.Clustering(dim, config.k, params)
            index, device = _index(faiss, dim, config.gpu)
            clustering.train(data, index)
            stats = clustering.iteration_stats
            obj = stats.at(stats.size() - 1).obj
            if obj < best_obj:
                best_obj = obj
                best = faiss.vector_to_array(clustering.centroids).reshape(config.k, dim).astype(np.float32)
            bar.update(1)
    return best, {"sample": n, "niter": niter, "device": device, "objective": float(best_obj)}


def faiss_index_path(centroids: str | os.PathLike) -> Path:
    """``NAME.kmeans_faiss.index`` beside ``NAME.npy`` (``NAME.centroids.npy`` gives the same NAME)."""
    path = Path(centroids)
    stem = path.name[:-len(".centroids.npy")] if path.name.endswith(".centroids.npy") else path.stem
    return path.with_name(stem + INDEX_SUFFIX)


FAISS_FLAT_L2_MAGIC = b"IxF2"  # how faiss.write_index starts an IndexFlatL2 file


def write_faiss_index_to(file: str | os.PathLike, centroids: np.ndarray) -> None:
    """The centroids as a faiss ``IndexFlatL2``, written to ``file`` as it is (a staged temp file: train
    renames it into place with the centroids, see :class:`~audiotok.runtime.formats.file_set.FileSet`)."""
    faiss = import_faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    faiss.write_index(index, str(file))
