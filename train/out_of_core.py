"""k-means over a feature cache larger than memory: scikit-learn's MiniBatchKMeans ``partial_fit``.

``MiniBatchKMeans.fit`` needs every feature in memory. Here the same algorithm runs over the
cache's shards instead, one shard in memory at a time, following the in-memory fit's recipe as far
as a stream allows:

* initialisation: ``n_init`` k-means++ runs, each on ``init_size`` rows (3 x batch size, or 3 x k)
  drawn from a seeded pool spread over all shards; the one with the lowest inertia on a separate
  validation sample wins (what ``fit`` does on in-memory data);
* then passes over the data (at most ``max_iter``), shards in a seeded random order, rows shuffled
  within each shard, cut into ``batch_size`` mini-batches fed to ``partial_fit``;
* early stopping on the exponentially weighted mean batch inertia, after ``max_no_improvement``
  batches without improvement (scikit-learn's rule, reimplemented because ``partial_fit`` leaves it out).

Same cache and seed give the same centroids. Memory: one shard, one batch and the init samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus
from tqdm import tqdm

from .feature_cache import CachedFeatures
from .kmeans import KMeansConfig, nearest

INIT_POOL_FACTOR = 4  # the init pool holds this many init samples' worth of rows (fewer random reads)


def mean_inertia(batch: np.ndarray, centers: np.ndarray) -> float:
    """Mean squared distance of a batch to its nearest centers (float32, like scikit-learn's own)."""
    d = (centers * centers).sum(1)[None] - 2.0 * batch @ centers.T
    return float(np.maximum(d.min(1) + (batch * batch).sum(1), 0.0).mean())


def shuffled_batches(features: CachedFeatures, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One pass: shards in random order, rows shuffled within each, full batches (the remainder last)."""
    carry = np.zeros((0, features.dim), np.float32)
    for i in rng.permutation(len(features)):
        shard = features.shard(int(i))
        rows = np.concatenate([carry, shard[rng.permutation(len(shard))]])
        full = len(rows) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield rows[start:start + batch_size]
        carry = rows[full:]
    if len(carry):
        yield carry


def initial_centroids(features: CachedFeatures, config: KMeansConfig, rng: np.random.Generator) -> np.ndarray:
    """Best of ``n_init`` k-means++ initialisations, by inertia on a validation sample."""
    n = features.rows
    init_size = min(n, 3 * config.batch_size if 3 * config.batch_size >= config.k else 3 * config.k)
    pool = features.take(np.sort(rng.choice(n, min(n, INIT_POOL_FACTOR * init_size), replace=False)))
    valid = features.take(np.sort(rng.integers(0, n, init_size)))
    best, best_inertia = None, np.inf
    for _ in range(config.n_init):
        sample = pool[rng.integers(0, len(pool), init_size)]
        centers, _ = kmeans_plusplus(sample, config.k, random_state=int(rng.integers(2**31 - 1)))
        inertia = float(nearest(valid, centers)[1].sum())
        if inertia < best_inertia:
            best, best_inertia = centers, inertia
    return best.astype(np.float32)


def fit_out_of_core(features: CachedFeatures, config: KMeansConfig) -> np.ndarray:
    """Fit from scratch over the shards; returns ``[k, dim]`` float32 centroids."""
    rng = np.random.default_rng(config.seed)
    init = initial_centroids(features, config, rng)
    km = MiniBatchKMeans(n_clusters=config.k, init=init, n_init=1, batch_size=config.batch_size,
                         reassignment_ratio=config.reassignment_ratio, random_state=config.seed,
                         compute_labels=False)
    batch_size = min(config.batch_size, features.rows)
    alpha = min(1.0, batch_size * 2.0 / (features.rows + 1))
    steps_per_pass = -(-features.rows // batch_size)
    ewa = ewa_min = None
    no_improvement = step = 0
    with tqdm(total=config.max_iter * steps_per_pass, desc="k-means (out of core)", unit="batch",
              disable=None, leave=False) as bar:
        for _ in range(config.max_iter):
            for batch in shuffled_batches(features, batch_size, rng):
                centers = km.cluster_centers_ if step else init
                inertia = mean_inertia(batch, centers)  # before the update, as scikit-learn measures it
                km.partial_fit(batch)
                step += 1
                bar.update(1)
                if step == 1:  # the first batch's inertia measures the initialisation, not the fit
                    continue
                ewa = inertia if ewa is None else ewa * (1 - alpha) + inertia * alpha
                if ewa_min is None or ewa < ewa_min:
                    no_improvement, ewa_min = 0, ewa
                else:
                    no_improvement += 1
                if no_improvement >= config.max_no_improvement:
                    return km.cluster_centers_.astype(np.float32)
    return km.cluster_centers_.astype(np.float32)
