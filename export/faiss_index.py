"""Reading centroids from a faiss index (a flat or HNSW-flat index of centroids, or an IVF index's coarse quantizer).

Large vocabularies are often clustered with faiss (mHuBERT-147 publishes its k-means that way).
The units are the coarse quantizer's list ids: the nearest of its ``nlist`` centroids. An index may
first apply linear transforms (OPQ rotation, PCA without whitening, random rotation): when the
whole chain is ``x -> A x + b`` with orthonormal rows in ``A``, nearest centroid ``c`` after the
transform is exactly nearest centroid ``A^T (c - b)`` before it, because ``||A x||`` is the same
for every centroid and ``||A^T (c - b)|| = ||c - b||``. So the centroids are mapped back into the
encoder's feature space and the bundle needs no transform. Other transforms are refused.

faiss itself searches its quantizer approximately when that quantizer is an HNSW graph; a bundle
always takes the exact nearest centroid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .centroid_limits import CentroidsError

AFFINE_TOLERANCE = 1e-4  # relative error allowed when checking that a transform chain is affine
ORTHONORMAL_TOLERANCE = 1e-4  # max |A A^T - I| for the mapping back to be exact
PROBE_POINTS = 16  # random points used to check that the chain is affine
PROBE_SEED = 0


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise CentroidsError("this --centroids file is a faiss index; reading it needs faiss: "
                             "pip install faiss-cpu") from None
    return faiss


def _chain_as_affine(apply, d_in: int, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(A [d_out, d_in], b [d_out])`` of a transform chain, measured by probing it; refuses non-affine ones."""
    b = apply(np.zeros((1, d_in), np.float32))[0].astype(np.float64)
    a = (apply(np.eye(d_in, dtype=np.float32)).astype(np.float64) - b).T
    probe = np.random.default_rng(PROBE_SEED).standard_normal((PROBE_POINTS, d_in)).astype(np.float32)
    expected, got = probe.astype(np.float64) @ a.T + b, apply(probe).astype(np.float64)
    if np.abs(expected - got).max() > AFFINE_TOLERANCE * max(1.0, np.abs(got).max()):
        raise CentroidsError(f"--centroids {source}: the faiss index transforms vectors non-linearly "
                             f"(e.g. L2 normalization) before clustering; such an index cannot be exported")
    if np.abs(a @ a.T - np.eye(len(a))).max() > ORTHONORMAL_TOLERANCE:
        raise CentroidsError(f"--centroids {source}: the faiss index applies a linear transform that is not a "
                             f"rotation/projection (e.g. PCA with whitening); its units cannot be reproduced "
                             f"by nearest centroid in the encoder's feature space")
    return a, b


def read_faiss_centroids(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    faiss = _import_faiss()
    try:
        # Read through a memory map: a vector's claimed size is checked against the file before
        # anything is allocated (a plain read_index allocates whatever a crafted header claims).
        raw = faiss.read_index(str(path), getattr(faiss, "IO_FLAG_MMAP_IFC", 0))
    except MemoryError:
        raise CentroidsError(f"--centroids {path}: the faiss index claims more memory than this machine has; "
                             f"it is corrupt or not a vocabulary") from None
    except RuntimeError as exc:
        detail = str(exc).strip().split("Error: ")[-1].splitlines()[0][:160] if str(exc).strip() else "read error"
        raise CentroidsError(f"--centroids {path}: not a readable faiss index ({detail})") from None
    index = faiss.downcast_index(raw)  # `raw` owns the C++ object: keep it referenced while `index` is used
    details: dict[str, Any] = {"index": type(index).__name__}
    transform = None
    if isinstance(index, faiss.IndexPreTransform):
        outer, index = index, faiss.downcast_index(index.index)
        transform = _chain_as_affine(lambda x: _apply_chain(faiss, outer, x), outer.d, path)
        details["index"] = f"{type(outer).__name__}({type(index).__name__})"
        details["transform"] = {"d_in": int(outer.d), "d_out": int(index.d)}
    if index.metric_type != faiss.METRIC_L2:
        metric = "inner product" if index.metric_type == faiss.METRIC_INNER_PRODUCT else f"metric {index.metric_type}"
        raise CentroidsError(f"--centroids {path}: the faiss index uses {metric}, not L2; "
                             f"only L2 (Euclidean) vocabularies give nearest-centroid units")
    if isinstance(index, faiss.IndexIVF):
        quantizer = faiss.downcast_index(index.quantizer)
        if quantizer.metric_type != faiss.METRIC_L2:
            raise CentroidsError(f"--centroids {path}: the IVF quantizer does not use the L2 metric")
        centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
        details["quantizer"] = type(quantizer).__name__
    elif isinstance(index, (faiss.IndexFlat, faiss.IndexHNSWFlat)):  # the stored vectors are the centroids
        centroids = index.reconstruct_n(0, index.ntotal)
    else:
        raise CentroidsError(f"--centroids {path}: a faiss {type(index).__name__}; accepted are flat indexes "
                             f"(IndexFlatL2 or IndexHNSWFlat holding the centroids) and IVF indexes (centroids of the quantizer)")
    centroids = np.asarray(centroids, np.float64)
    if transform is not None:
        a, b = transform
        centroids = (centroids - b) @ a
    del raw
    return centroids, details


def _apply_chain(faiss, index, x: np.ndarray) -> np.ndarray:
    """Run ``x`` through an IndexPreTransform's chain, transform by transform."""
    out = np.ascontiguousarray(x, np.float32)
    for i in range(index.chain.size()):
        out = faiss.downcast_VectorTransform(index.chain.at(i)).apply(out)
    return out
