"""Graph optimizations applied once at export and saved in the bundle.

onnxruntime would otherwise redo constant folding and pattern fusions every time a bundle is
loaded. Two passes, both execution-provider neutral, so the fp32 bundle stays portable (CPU, CUDA,
...) and the int8 and fp16 variants start from a graph whose structure is already fused:

1. onnxruntime's basic level (constant folding, redundant node elimination), which changes no
   arithmetic;
2. onnxruntime's transformer fusions for post- and pre-LayerNorm encoders (the ``bert`` model
   type covers the HuBERT / wav2vec2 block): LayerNorm, SkipLayerNorm (residual + LayerNorm),
   BiasGelu, Gelu. Fused kernels compute the same functions; the export's parity check measures
   that the units do not move.

The attention block itself is not fused: on CPU the fused Attention kernel measured no faster than
the MatMul/Softmax/MatMul it replaces, and leaving it unfused keeps the projections visible as plain
MatMuls for the int8 quantizer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from audiotok.runtime.session import session_options

from .container import EXTERNAL_MIN_BYTES, save_stage
from .quiet import quiet

TRANSFORMER_MODEL_TYPE = "bert"  # onnxruntime.transformers' fusion set matching wav2vec2-style blocks


def basic_optimize(source: Path, target: Path) -> None:
    """onnxruntime's provider-neutral basic optimizations, written to ``target``."""
    options = session_options()  # audiotok's logging settings, at the provider-neutral level only
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    # Weights into a file beside the result: a model past 2 GB cannot be one protobuf.
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", target.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                     str(EXTERNAL_MIN_BYTES))
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def fuse_transformer(source: Path, target: Path) -> dict[str, int]:
    """Apply onnxruntime's transformer fusions; returns the count of each fused operator."""
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet("onnxruntime.transformers"):
        optimized = optimize_model(str(source), model_type=TRANSFORMER_MODEL_TYPE, num_heads=0, hidden_size=0,
                                   opt_level=0)
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(target), use_external_data_format=True, size_threshold=EXTERNAL_MIN_BYTES)
    return fused


def optimize_graph(source: Path, target: Path, *, transformer: bool) -> dict[str, int]:
    """Basic optimizations, then (for transformer encoders) the fusions; ``target`` is the result."""
    with tempfile.TemporaryDirectory(prefix="audiotok-optimize-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        basic_optimize(source, folded)
        if transformer:
            return fuse_transformer(folded, target)
        save_stage(onnx.load(str(folded)), target)
    return {}
