"""Dynamic int8 for the transformer's projections, one weight at a time.

Writes exactly what onnxruntime's ``quantize_dynamic`` (``per_channel=True``, ``QInt8`` weights,
``MatMulConstBOnly``) writes for a MatMul ``Y = A @ W``, with the same names and values:

    A -> DynamicQuantizeLinear -> A_quantized (uint8), A_scale, A_zero_point   (once per A)
    MatMulInteger(A_quantized, W_quantized, A_zero_point, W_zero_point) -> int32 -> Cast(float)
    Mul(A_scale, W_scale) -> scales;  Mul(cast, scales) -> Y

``W_quantized`` (int8), ``W_scale`` and ``W_zero_point`` (per output channel) come from
onnxruntime's own ``quantize_data``, column by column as its quantizer calls it, so units are those
of its graph. onnxruntime's quantizer loads the whole model and keeps the float32 and int8 copies
at once; here each weight is read from the fp32 stage's data file, quantized and written to the
new stage's file before the next one is read (container.write_stage).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from .container import Payload, Source, read_source

CHANNEL_AXIS = 1  # MatMul weights [in, out]: one scale per output column, as onnxruntime's quantizer picks


def _quantized_weight(source: Source, scale: TensorProto, zero_point: TensorProto) -> Callable[[], np.ndarray]:
    """The int8 bytes of a float32 [in, out] weight; fills ``scale`` and ``zero_point`` as it makes them."""
    from onnxruntime.quantization.quant_utils import quantize_data

    def make() -> np.ndarray:
        weights = np.frombuffer(read_source(source), dtype=np.float32).reshape(tuple(source.tensor.dims))
        columns = np.ascontiguousarray(weights.T)  # column i of the weight, in its own order
        quantized = np.empty(columns.shape, dtype=np.int8)
        scales, zero_points = [], []
        for i, column in enumerate(columns):
            zp, sc, q = quantize_data(column, TensorProto.INT8, True, reduce_range=False, min_real_range=None)
            quantized[i] = q
            scales.append(sc)
            zero_points.append(zp)
        scale.float_data[:] = np.hstack(scales).tolist()
        zero_point.int32_data[:] = np.hstack(zero_points).tolist()
        return np.ascontiguousarray(quantized.T)

    return make


def _weight_tensors(model: onnx.ModelProto, weight: Source, payloads: dict[str, Payload]) -> None:
    name, dims = weight.tensor.name, list(weight.tensor.dims)
    scale = TensorProto(name=name + "_scale", data_type=TensorProto.FLOAT, dims=[dims[CHANNEL_AXIS]])
    zero_point = TensorProto(name=name + "_zero_point", data_type=TensorProto.INT8, dims=[dims[CHANNEL_AXIS]])
    quantized = TensorProto(name=name + "_quantized", data_type=TensorProto.INT8, dims=dims)
    model.graph.initializer.extend([scale, zero_point, quantized])
    # the proto's own copies (extend copies): filled when the int8 bytes are made, before the graph is saved
    added = {t.name: t for t in model.graph.initializer[-3:]}
    payloads[quantized.name] = _quantized_weight(weight, added[scale.name], added[zero_point.name])


def _replacement(node: onnx.NodeProto, activation: str, weight: str, new_activation: bool) -> list[onnx.NodeProto]:
    nodes = []
    if new_activation:
        nodes.append(helper.make_node("DynamicQuantizeLinear", [activation],
                                      [activation + "_quantized", activation + "_scale", activation + "_zero_point"],
                                      activation + "_QuantizeLinear"))
    product = node.output[0] + "_output_quantized"
    name = node.name + "_quant"
    nodes += [
        helper.make_node("Mul", [activation + "_scale", weight + "_scale"], [name + "_scales_mul:0"],
                         name + "_scales_mul"),
        helper.make_node("MatMulInteger", [activation + "_quantized", weight + "_quantized",
                                           activation + "_zero_point", weight + "_zero_point"], [product], name),
        helper.make_node("Cast", [product], [product + "_cast_output"], product + "_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [product + "_cast_output", name + "_scales_mul:0"], [node.output[0]],
                         name + "_output_scale_mul"),
    ]
    return nodes


def quantize_linear(model: onnx.ModelProto, sources: dict[str, Source], names: list[str]) -> dict[str, Payload]:
    """Rewrite the MatMuls ``names`` of ``model`` (weights external, in ``sources``) to dynamic int8.

    Returns what container.write_stage needs: the bytes of every external tensor the graph still
    uses, copied or quantized on demand.
    """
    wanted = set(names)
    payloads: dict[str, Payload] = {}
    quantized_activations: set[str] = set()
    nodes = []
    for node in model.graph.node:
        if node.name not in wanted:
            nodes.append(node)
            continue
        activation, weight = node.input[0], node.input[1]
        if weight + "_quantized" not in payloads:
            _weight_tensors(model, sources[weight], payloads)
        nodes += _replacement(node, activation, weight, activation not in quantized_activations)
        quantized_activations.add(activation)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for tensor in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(tensor)
    payloads.update({name: source for name, source in sources.items() if name in used})
    return payloads
