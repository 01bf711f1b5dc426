"""Opening a bundle: an onnxruntime session plus its manifest, with clear errors.

Execution providers are chosen by short name (``cpu``, ``cuda``, ``tensorrt``, ``coreml``, ...)
or by onnxruntime's full name; ones this onnxruntime build lacks fall back to CPU with a warning,
because a tokenizer that refuses to start is worse than a slower one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import onnxruntime as ort

from .constants import MANIFEST_KEY
from .errors import BundleError
from .manifest import Manifest

INPUT_NAME = "waveform"
OUTPUT_NAME = "units"

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}


def resolve_providers(requested: list[str] | str | None) -> list[str]:
    """Map short names to onnxruntime providers, dropping (with a warning) those not available."""
    if requested is None:
        return ["CPUExecutionProvider"]
    names = [requested] if isinstance(requested, str) else list(requested)
    available = ort.get_available_providers()
    chosen: list[str] = []
    for name in names:
        full = _PROVIDER_ALIASES.get(name.lower(), name)
        if full in available:
            if full not in chosen:
                chosen.append(full)
        else:
            print(f"audiotok: warning: execution provider {name!r} is not available in this onnxruntime "
                  f"(available: {', '.join(available)}); falling back to CPU", file=sys.stderr)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """How every audiotok session runs: all graph optimizations, errors-only logging, ``threads`` intra-op."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's problem
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def open_session(bundle: str | os.PathLike, *, providers: list[str] | str | None = None,
                 threads: int | None = None) -> tuple[ort.InferenceSession, Manifest]:
    path = Path(bundle)
    if not path.exists():
        raise BundleError(f"{path}: no such file")
    if path.is_dir():
        raise BundleError(f"{path}: is a folder, not an ONNX bundle")
    try:
        session = ort.InferenceSession(str(path), session_options(threads), providers=resolve_providers(providers))
    except Exception as exc:  # onnxruntime raises several private exception types here
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{path}: not a valid ONNX model, or a truncated one ({detail})") from None
    metadata = session.get_modelmeta().custom_metadata_map
    if MANIFEST_KEY not in metadata:
        raise BundleError(f"{path}: an ONNX model, but not an audiotok bundle (no '{MANIFEST_KEY}' manifest)")
    manifest = Manifest.from_json(metadata[MANIFEST_KEY], source=str(path))
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise BundleError(f"{path}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', "
                          f"found inputs {inputs} and outputs {outputs}")
    return session, manifest
