"""Reading centroids from a torch file: a tensor, or a state dict holding exactly one k x dim float tensor.

The file is loaded with ``weights_only=True``: only tensors and plain containers are rebuilt, no
code from the file runs. What comes back is still a stranger's: sparse, meta (no data) and
quantized tensors, containers nested thousands deep or sharing one list a million times, and zip
entries that inflate far beyond the file. Each is refused with one line before it can exhaust
memory or the stack.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .centroid_limits import CentroidsError, inflation_limit
from .quiet import quiet

MAX_DEPTH = 64  # containers nested inside one another
MAX_NODES = 100_000  # values visited while looking for the centroid tensor


def check_zip_size(path: Path) -> None:
    """Refuse a torch zip whose entries claim to inflate beyond what its size makes plausible."""
    try:
        with zipfile.ZipFile(path) as archive:
            claimed = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CentroidsError(f"--centroids {path}: a damaged zip archive ({exc})") from None
    limit = inflation_limit(path.stat().st_size)
    if claimed > limit:
        raise CentroidsError(f"--centroids {path}: its zip entries claim {claimed} bytes, more than the "
                             f"{limit} a vocabulary file of this size can plausibly hold")


def _reason(exc: Exception) -> str:
    """Why torch could not load the file, as one complete sentence (never torch's advice to trust the file)."""
    text = str(exc).strip()
    if "weights only load failed" in text.lower() or "weights_only" in text:
        return ("it holds Python objects other than tensors and plain containers, and audiotok runs no code from "
                "a vocabulary file; save the centroids alone with torch.save(tensor, path) or numpy.save")
    first = text.splitlines()[0].split(". ")[0].strip() if text else ""
    if not first or len(first) > 160:
        return f"{type(exc).__name__} while reading it"
    return first.rstrip(".")


def _as_array(tensor: Any, where: str, path: Path) -> np.ndarray:
    import torch

    label = f"the tensor {where}" if where else "the tensor"
    if tensor.layout != torch.strided:
        raise CentroidsError(f"--centroids {path}: {label} is {str(tensor.layout).replace('torch.', '')}; "
                             f"save the centroids as a dense tensor (tensor.to_dense())")
    if tensor.is_meta:
        raise CentroidsError(f"--centroids {path}: {label} is a meta tensor, which has a shape but no values")
    if tensor.is_quantized:
        raise CentroidsError(f"--centroids {path}: {label} is quantized ({tensor.dtype}); save the float "
                             f"centroids (tensor.dequantize())")
    if not tensor.is_floating_point():
        raise CentroidsError(f"--centroids {path}: {label} holds {tensor.dtype}, not floating-point values")
    try:
        return tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    except (RuntimeError, TypeError) as exc:
        raise CentroidsError(f"--centroids {path}: {label} cannot be read ({_reason(exc)})") from None


def _matrices(obj: Any, path: Path) -> list[tuple[str, Any]]:
    """Every 2-D tensor with a float-like dtype inside ``obj``, with its place; walks without recursion."""
    import torch

    found, stack, visited = [], [(obj, "", 0)], 0
    while stack:
        node, where, depth = stack.pop()
        visited += 1
        if depth > MAX_DEPTH or visited > MAX_NODES:
            raise CentroidsError(f"--centroids {path}: its containers are nested deeper than {MAX_DEPTH} levels or "
                                 f"hold more than {MAX_NODES} values; save the centroids alone")
        if isinstance(node, torch.Tensor):
            if node.ndim == 2 and (node.dtype.is_floating_point or node.is_quantized):
                found.append((where, node))
        elif isinstance(node, dict):
            stack.extend((value, f"{where}.{key}" if where else str(key), depth + 1)
                         for key, value in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend((value, f"{where}[{i}]", depth + 1) for i, value in reversed(list(enumerate(node))))
    return found


def load_torch_centroids(path: Path) -> tuple[np.ndarray, dict]:
    """A tensor, or a (possibly nested) state dict with exactly one 2-D float tensor."""
    import torch

    if zipfile.is_zipfile(path):
        check_zip_size(path)
    try:
        with quiet():  # torch's deprecation notes are not the user's problem
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign, damaged or unsafe content
        raise CentroidsError(f"--centroids {path}: not a readable torch file: {_reason(exc)}") from None
    if isinstance(obj, torch.Tensor):
        return _as_array(obj, "", path), {"tensor": None}
    found = _matrices(obj, path)
    if len(found) != 1:
        names = ", ".join(f"{name} {tuple(t.shape)}" for name, t in found[:8]) or "none"
        raise CentroidsError(f"--centroids {path}: expected a tensor or a state dict with exactly one k x dim "
                             f"float tensor, found {len(found)} ({names}); save the centroids alone")
    name, tensor = found[0]
    return _as_array(tensor, name, path), {"tensor": name}
