"""fp16 for GPU execution providers: half precision inside, float32 at both ends.

The waveform input stays float32 (callers and the runtime feed float32; a cast at the graph's
entrance is free next to the encoder). The centroid distance and its argmin stay float32 with
float32 centroids: the distances of a frame to its two nearest centroids often differ by less than
fp16's resolution at their magnitude, and a tie broken differently is a different unit.
Everything else (CNN, transformer) runs in fp16, where GPUs are fastest. The graph also loads and
runs on the CPU provider (slowly), which is how it is checked where no GPU is present.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import onnx

from .centroids import distance_nodes
from .container import Source, external_sources, read_source, write_stage

# Ops whose fp16 versions lose range or precision that matters here, on top of onnxruntime's list.
# Normalizations over long inputs accumulate sums of squares that overflow fp16's 65504.
KEEP_FP32_OPS = ["InstanceNormalization", "ReduceMean", "ReduceSum", "Pow", "Sqrt", "ArgMin"]


def _fp32_tensors(model: onnx.ModelProto, fp32_nodes: set[str]) -> set[str]:
    """Tensors known to be float32: graph inputs, fp32 initializers, outputs of kept nodes and fp32 casts."""
    known = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    known |= {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for node in model.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.name in fp32_nodes or (node.op_type == "Cast" and to == onnx.TensorProto.FLOAT):
            known.update(node.output)
    return known


def _drop_round_trips(model: onnx.ModelProto, fp32_nodes: set[str]) -> None:
    """Remove the converter's fp32 -> fp16 -> fp32 Cast pairs between nodes kept in fp32.

    The converter casts every kept node's output to fp16 and back before the next kept node, which
    would round the centroid distances to fp16 right before the argmin: exactly what must not happen.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    fp32 = _fp32_tensors(model, fp32_nodes)
    replace: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Cast" or next(a.i for a in node.attribute if a.name == "to") != onnx.TensorProto.FLOAT:
            continue
        source = node.input[0]
        first = producer.get(source)
        if first is not None and first.op_type == "Cast" and first.input[0] in fp32:
            replace[node.output[0]] = first.input[0]  # fp32 -> fp16 -> fp32
        elif source in fp32 and first is None:
            replace[node.output[0]] = source  # a cast of an fp32 initializer to fp32
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = replace.get(name, name)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    while True:  # prune casts (and chains of them) that no longer feed anything
        dead = [n for n in model.graph.node if n.op_type == "Cast" and not set(n.output) & used]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    stale = [v for v in model.graph.value_info if v.name in replace or v.name not in used]
    for info in stale:
        model.graph.value_info.remove(info)


@contextlib.contextmanager
def _weightless_converter() -> Iterator[None]:
    """onnxruntime's converter, made to work on a graph whose weights stay in their file.

    The converter flips the type of each initializer it converts and rewrites the bytes it holds;
    an external tensor holds none, so only its type changes (its bytes are converted afterwards,
    one tensor at a time). Its one read of a tensor's values, for a shape, is served by the dims.
    """
    from onnxruntime.transformers import float16

    def value_info(tensor: onnx.TensorProto) -> onnx.ValueInfoProto:
        return onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with mock.patch.object(float16, "make_value_info_from_tensor", value_info), \
                contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _halved(source: Source):
    """The fp16 bytes of an fp32 tensor, exactly as onnxruntime's converter rounds and clamps them."""
    from onnxruntime.transformers.float16 import convert_np_to_float16

    return lambda: convert_np_to_float16(np.frombuffer(read_source(source), dtype=np.float32))


def to_fp16(source: Path, target: Path) -> list[str]:
    """Write the fp16 version of the fp32 graph at ``source``; returns the nodes kept in fp32.

    The graph is converted without its weights; then each weight is converted (or copied, where it
    stays fp32) from ``source``'s data file into ``target``'s, one tensor at a time: the peak is one
    tensor, not two models.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # Shapes inferred on the file (in-memory inference refuses models past 2 GB); its weights stay beside it.
    inferred = source.with_name(source.stem + "-shapes.onnx")
    onnx.shape_inference.infer_shapes_path(str(source), str(inferred))
    model = onnx.load(str(inferred), load_external_data=False)
    inferred.unlink()
    sources = external_sources(model, source.parent)
    was_float = {name for name, s in sources.items() if s.tensor.data_type == onnx.TensorProto.FLOAT}
    keep = sorted(distance_nodes(model).values())
    with _weightless_converter():
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep,
                                        op_block_list=DEFAULT_OP_BLOCK_LIST + KEEP_FP32_OPS,
                                        disable_shape_infer=True)
    _drop_round_trips(half, set(keep))
    payloads = {}
    for tensor in half.graph.initializer:
        if tensor.name in sources:
            converted = tensor.name in was_float and tensor.data_type == onnx.TensorProto.FLOAT16
            payloads[tensor.name] = _halved(sources[tensor.name]) if converted else sources[tensor.name]
    write_stage(half, target, payloads)
    return keep
