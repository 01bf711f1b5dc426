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

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnxruntime as ort

from audiotok.runtime.bundle.session import session_options

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
    """Apply onnxruntime's transformer fusions; returns the count of each fused operator.

    The fusions see the graph without its weights' values (the large tensors stay references to
    ``source``'s data file, so ``target`` must be written in the same folder): they match
    operators and shapes, and their shape inference copies the model several times, which with the
    weights loaded cost 5.7x the weights' size in memory (0.8 GB of weights peaked at 6.1 GB).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    if source.parent.resolve() != target.parent.resolve():
        raise ValueError("fuse_transformer writes beside its source: the result refers to the source's weights")
    # Fusions that read a constant's value load it from its data file, relative to the working folder.
    with quiet("onnxruntime.transformers"), working_folder(source.parent):
        weightless = onnx.load(str(source), load_external_data=False)
        optimized = optimize_model(weightless, model_type=TRANSFORMER_MODEL_TYPE, num_heads=0, hidden_size=0,
                                   opt_level=0, optimization_options=_fusion_options())
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(target), use_external_data_format=True, size_threshold=EXTERNAL_MIN_BYTES)
    return fused


def _fusion_options():
    """The ``bert`` fusions without symbolic shape inference.

    Shape inference fails on a graph with an ``If`` (the stream entry point's), and the SkipLayerNorm
    fusion then matched nothing; on the same graph without one it spent 10-30 CPU s in sympy simplifying
    the stream slices' bounds, for a tiny encoder. The residual Adds it fuses join tensors of one shape
    ([batch, frames, dim]) in every supported encoder, and export's parity check measures the result."""
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(TRANSFORMER_MODEL_TYPE)
    options.enable_shape_inference = False
    return options


@contextmanager
def working_folder(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def optimize_graph(source: Path, target: Path, *, transformer: bool) -> dict[str, int]:
    """Basic optimizations, then (for transformer encoders) the fusions; ``target`` is the result."""
    folded = target.with_name(target.stem + "-folded.onnx")  # beside the target: the fused graph refers to its data
    basic_optimize(source, folded)
    if transformer:
        return fuse_transformer(folded, target)
    save_stage(onnx.load(str(folded)), target)
    return {}
