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

from audiotok.runtime.bundle.centroids import centroids_sha256

from .centroid_limits import COMPRESSED_MAGICS, CentroidsError

ACCEPTED = ("a .npy array (k x dim), a torch .pt file (a tensor, or a state dict holding exactly one "
            "k x dim float tensor), a scikit-learn KMeans/MiniBatchKMeans pickle (fairseq/GSLM km.bin, "
            "joblib, plain or compressed), or a faiss flat/IVF index")
SNIFF_BYTES = 16  # enough for every signature below
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


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


def _npy_header(f, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, checked against the bytes the file holds before any allocation."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise CentroidsError(f"--centroids {path}: not a readable .npy array "
                             f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    if dtype.hasobject:
        raise CentroidsError(f"--centroids {path}: a .npy of Python objects; audiotok reads numeric arrays only")
    if len(shape) != 2:
        raise CentroidsError(f"--centroids {path}: expected a float array shaped (k, dim), the .npy header says "
                             f"shape {shape}")
    claimed = shape[0] * shape[1] * dtype.itemsize  # Python ints: no overflow
    held = path.stat().st_size - f.tell()
    if claimed > held:
        raise CentroidsError(f"--centroids {path}: the .npy header claims shape {shape} of {dtype} ({claimed} bytes) "
                             f"but the file holds {held} bytes of data; it is truncated or corrupt")
    return shape, dtype


def _load_npy(path: Path) -> tuple[np.ndarray, dict]:
    with open(path, "rb") as f:
        _npy_header(f, path)
    try:
        return np.load(path, allow_pickle=False), {}
    except (ValueError, OSError) as exc:
        raise CentroidsError(f"--centroids {path}: not a readable .npy array "
                             f"({str(exc).splitlines()[0][:120]})") from None


def load_centroids(path: str | Path) -> Centroids:
    """Read a ``[k, dim]`` vocabulary from any accepted format (see ``ACCEPTED``), detected from content."""
    p = Path(path)
    if p.is_dir():
        raise CentroidsError(f"--centroids {p}: is a folder; give the centroids file itself (.npy, .pt, km.bin, "
                             f"faiss index)")
    if not p.exists():
        raise CentroidsError(f"--centroids {p}: no such file")
    if not p.is_file():
        raise CentroidsError(f"--centroids {p}: not a regular file (a pipe or device); give a file")
    with open(p, "rb") as f:
        head = f.read(SNIFF_BYTES)
    kind = sniff_format(head)
    if kind == "npy":
        fmt, (array, details) = "npy", _load_npy(p)
    elif kind == "zip":
        from .torch_centroids import load_torch_centroids

        try:
            names = zipfile.ZipFile(p).namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if not any(name.endswith("data.pkl") for name in names):
            raise CentroidsError(f"--centroids {p}: a zip archive that is not a torch .pt file; accepted: {ACCEPTED}")
        fmt, (array, details) = "torch", load_torch_centroids(p)
    elif kind == "pickle":
        from .sklearn_pickle import TORCH_LEGACY, read_kmeans_pickle

        result = read_kmeans_pickle(p)
        if result is TORCH_LEGACY:
            from .torch_centroids import load_torch_centroids

            fmt, (array, details) = "torch", load_torch_centroids(p)
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

