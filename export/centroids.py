"""Reading a unit vocabulary (centroids) for export, whatever tool produced it.

Users often must stay compatible with a vocabulary they already have: a fairseq/GSLM ``km.bin``
(a joblib-pickled scikit-learn k-means), a centroid array saved from numpy or torch, or a faiss
index. The format is recognised from the file's first bytes, not its name, because these files
travel under arbitrary names (``km.bin``, ``kmeans.pt``, ``index``). Whatever the source, the
result is a ``[k, dim]`` float32 array plus a record of where it came from for the manifest.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiotok.runtime.bundle_centroids import centroids_sha256
from audiotok.runtime.errors import AudiotokError

ACCEPTED = ("a .npy array (k x dim), a torch .pt file (a tensor, or a state dict holding exactly one "
            "k x dim float tensor), a scikit-learn KMeans/MiniBatchKMeans pickle (fairseq/GSLM km.bin, "
            "joblib, plain or compressed), or a faiss flat/IVF index")
SNIFF_BYTES = 16  # enough for every signature below
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# joblib's optional compressors (stdlib codecs only): gzip, bz2, xz, lzma, zlib.
COMPRESSED_MAGICS = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x5d\x00\x00": "lzma",
                     b"\x78\x01": "zlib", b"\x78\x5e": "zlib", b"\x78\x9c": "zlib", b"\x78\xda": "zlib"}


class CentroidsError(AudiotokError):
    """Centroids that cannot be read or do not fit the encoder."""


@dataclass(frozen=True)
class Centroids:
    array: np.ndarray  # [k, dim] float32
    source: str
    format: str  # "npy", "torch", "sklearn" or "faiss"
    file_sha256: str = ""  # of the file as given, so a bundle can be traced to the exact vocabulary file
    details: dict[str, Any] = field(default_factory=dict)  # format specifics for the manifest

    @property
    def k(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def sha256(self) -> str:
        return centroids_sha256(self.array)

    def provenance(self) -> dict[str, Any]:
        """What the manifest records about the vocabulary's origin."""
        return {"source": Path(self.source).name, "format": self.format, "file_sha256": self.file_sha256,
                **self.details}


def sniff_format(head: bytes) -> str | None:
    """The container a file's first bytes announce, or None when none of the accepted ones."""
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5 (torch legacy too)
        return "pickle"
    if any(head.startswith(magic) for magic in COMPRESSED_MAGICS):
        return "pickle"
    if len(head) >= 4 and head[:1] == b"I" and head[:4].isalnum():  # faiss fourcc: IxF2, IwFl, IxPT, ...
        return "faiss"
    return None


def check_array(array: Any, source: str) -> np.ndarray:
    """A ``[k, dim]`` finite float array as contiguous float32, or a clear error."""
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1 or not np.issubdtype(array.dtype, np.floating):
        raise CentroidsError(f"--centroids {source}: expected a float array shaped (k, dim) with k >= 2, "
                             f"got {array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise CentroidsError(f"--centroids {source}: contains NaN or Inf")
    return np.array(array, dtype=np.float32, order="C", copy=True)  # writable, whatever buffer it came from


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_npy(path: Path) -> tuple[np.ndarray, dict]:
    try:
        return np.load(path, allow_pickle=False), {}
    except (ValueError, OSError) as exc:
        raise CentroidsError(f"--centroids {path}: not a readable .npy array "
                             f"({str(exc).splitlines()[0][:120]})") from None


def _load_torch(path: Path) -> tuple[np.ndarray, dict]:
    """A tensor, or a (possibly nested) state dict with exactly one 2-D float tensor."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or unsafe content
        raise CentroidsError(f"--centroids {path}: not a readable torch file "
                             f"({str(exc).splitlines()[0][:160]})") from None
    if isinstance(obj, torch.Tensor):
        return obj.detach().float().numpy(), {"tensor": None}
    found: list[tuple[str, torch.Tensor]] = []

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, torch.Tensor):
            if node.ndim == 2 and node.is_floating_point():
                found.append((prefix, node))
        elif isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f"{prefix}[{i}]")

    visit(obj, "")
    if len(found) != 1:
        names = ", ".join(f"{name} {tuple(t.shape)}" for name, t in found[:8]) or "none"
        raise CentroidsError(f"--centroids {path}: expected a tensor or a state dict with exactly one k x dim "
                             f"float tensor, found {len(found)} ({names}); save the centroids alone")
    name, tensor = found[0]
    return tensor.detach().float().numpy(), {"tensor": name}


def load_centroids(path: str | Path) -> Centroids:
    """Read a ``[k, dim]`` vocabulary from any accepted format (see ``ACCEPTED``), detected from content."""
    p = Path(path)
    if not p.is_file():
        raise CentroidsError(f"--centroids {p}: no such file")
    with open(p, "rb") as f:
        head = f.read(SNIFF_BYTES)
    kind = sniff_format(head)
    if kind == "npy":
        fmt, (array, details) = "npy", _load_npy(p)
    elif kind == "zip":
        try:
            names = zipfile.ZipFile(p).namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if not any(name.endswith("data.pkl") for name in names):
            raise CentroidsError(f"--centroids {p}: a zip archive that is not a torch .pt file; accepted: {ACCEPTED}")
        fmt, (array, details) = "torch", _load_torch(p)
    elif kind == "pickle":
        from .sklearn_pickle import TORCH_LEGACY, read_kmeans_pickle

        result = read_kmeans_pickle(p)
        if result is TORCH_LEGACY:
            fmt, (array, details) = "torch", _load_torch(p)
        else:
            fmt, (array, details) = "sklearn", result
    elif kind == "faiss":
        from .faiss_index import read_faiss_centroids

        fmt, (array, details) = "faiss", read_faiss_centroids(p)
    else:
        shown = head[:8].hex(" ") if head else "empty file"
        raise CentroidsError(f"--centroids {p}: format not recognised (first bytes: {shown}); accepted: {ACCEPTED}")
    return Centroids(check_array(array, str(p)), str(p), fmt, _file_sha256(p), details)


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

