"""Getting the unit vocabulary back out of a bundle.

The graph stores the centroids as the two constants of its nearest-centroid step: ``-2 C^T``
``[dim, k]`` and ``||c||^2`` ``[k]``. Scaling by -0.5 is exact in float32, so ``C`` comes back bit
for bit; the manifest's ``centroids_sha256`` (of the float32 array) proves it.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..errors import BundleError
from .manifest import Manifest
from .container import external_bytes, model_view
from .onnx_tensors import scan_initializers

# The exporter's name for -2 C^T (behind a module prefix such as "unit_graph." in bundles with a
# stream entry point); other constants of its shape are tried too.
CENTROID_INITIALIZER = "nearest.minus_two_ct"
ONNX_FLOAT = 1


def centroids_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def _initializers(bundle: str | os.PathLike, want) -> dict[str, np.ndarray]:
    """The wanted initializers of either layout (a container's large ones from its weight region)."""
    with model_view(bundle) as (model, weights):
        try:
            return scan_initializers(model, want, None if weights is None else lambda t: external_bytes(t, weights))
        except BundleError as exc:  # the wire-format reader's messages do not know the file's name
            raise BundleError(f"{bundle}: {exc}") from None


def extract_centroids(bundle: str | os.PathLike, manifest: Manifest) -> np.ndarray:
    """The bundle's ``[k, dim]`` float32 centroids, checked against the manifest's hash."""
    shape = (manifest.dim, manifest.k)
    tensors = _initializers(bundle, lambda t: t.dims == shape and t.data_type == ONNX_FLOAT)
    names = sorted(tensors, key=lambda name: not name.endswith(CENTROID_INITIALIZER))
    for name in names:
        centroids = np.ascontiguousarray((np.float32(-0.5) * tensors[name]).T, dtype=np.float32)
        if centroids_sha256(centroids) == manifest.centroids_sha256:
            return centroids
    raise BundleError(f"{bundle}: no float32 [{manifest.dim}, {manifest.k}] constant in the graph matches the "
                      f"manifest's centroids_sha256 ({len(names)} candidates); the bundle was changed after export")
