"""Reading a unit vocabulary (centroids) for export."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiotok.runtime.errors import AudiotokError


class CentroidsError(AudiotokError):
    """Centroids that cannot be read or do not fit the encoder."""


@dataclass(frozen=True)
class Centroids:
    array: np.ndarray  # [k, dim] float32
    source: str
    format: str

    @property
    def k(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.array, dtype="<f4").tobytes()).hexdigest()


def load_centroids(path: str | Path) -> Centroids:
    """Read a ``[k, dim]`` float centroid array from a .npy file."""
    p = Path(path)
    if not p.is_file():
        raise CentroidsError(f"--centroids {p}: no such file")
    try:
        array = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CentroidsError(f"--centroids {p}: not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None
    if array.ndim != 2 or array.shape[0] < 2 or not np.issubdtype(array.dtype, np.floating):
        raise CentroidsError(f"--centroids {p}: expected a float array shaped (k, dim) with k >= 2, "
                             f"got {array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise CentroidsError(f"--centroids {p}: contains NaN or Inf")
    return Centroids(np.ascontiguousarray(array, dtype=np.float32), str(p), "npy")


def distance_nodes(model) -> dict[str, str]:
    """Where a graph's centroids live: the ``ArgMin``, the ``+ ||c||^2`` ``Add`` before it and the
    ``h @ (-2 C^T)`` ``MatMul`` before that, by role ("argmin", "add", "matmul") -> node name.

    Every precision keeps these nodes (and their constants) in float32.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "ArgMin":
            continue
        found = {"argmin": node.name}
        add = producer.get(node.input[0])
        if add is not None and add.op_type == "Add":
            found["add"] = add.name
            for name in add.input:
                matmul = producer.get(name)
                if matmul is not None and matmul.op_type == "MatMul":
                    found["matmul"] = matmul.name
        return found
    return {}


def centroids_from_bundle(path: str | Path) -> np.ndarray | None:
    """The centroids inside a bundle, recovered from its distance constants, or None if not found.

    The graph holds ``-2 C^T`` as the weight of the MatMul that feeds ``ArgMin`` (through the
    ``+ ||c||^2`` Add). Multiplying by -0.5 is exact in floating point, so the recovered array has
    the same bytes as the exported one and its sha256 can be checked against the manifest.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights = {init.name: init for init in model.graph.initializer}
    matmul = next((n for n in model.graph.node if n.name == distance_nodes(model).get("matmul")), None)
    if matmul is None or matmul.input[1] not in weights:
        return None
    minus_two_ct = numpy_helper.to_array(weights[matmul.input[1]]).astype(np.float32)
    return np.ascontiguousarray((minus_two_ct * np.float32(-0.5)).T)
