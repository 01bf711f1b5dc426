"""Static int8 (QDQ, calibrated) for the convolution groups, without loading the encoder's weights.

onnxruntime's ``quantize_static`` loads the whole model, then calibrates on an augmented copy of it
in a session of its own: two to three copies of the weights. Here it sees only what it needs:

1. calibration: the part of the graph that computes the quantized convolutions (the CNN and the
   positional convolution come before the transformer layers) is cut out with its own weights;
   ``quantize_static`` calibrates on it and keeps the activation ranges in a cache file. Each range
   is a min and max of the same tensor computed by the same kernels, so it equals the range a
   calibration of the whole model gives.
2. quantization: ``quantize_static`` runs again on the whole graph, reading the ranges from the
   cache; every weight the convolutions do not use is a graph input for that run (shape and type,
   no bytes), and becomes an initializer again afterwards, its bytes still in the fp32 stage's
   data file.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_tensor

from audiotok.runtime.bundle.session import INPUT_NAME

from .container import Source
from .quiet import quiet


def _prefix(source: Path, model: onnx.ModelProto, outputs: list[str], target: Path) -> None:
    """The part of ``model`` (saved at ``source``) that computes ``outputs``, saved at ``target`` beside
    ``source`` (its weights stay references to the source's data file)."""
    from onnx.utils import Extractor

    extractor = Extractor(copy.deepcopy(model))
    onnx.save(extractor.extract_model([INPUT_NAME], outputs), str(target))


def _standing_in(model: onnx.ModelProto, folder: Path, keep: set[str]) -> tuple[onnx.ModelProto, dict]:
    """A copy of ``model`` whose external initializers outside ``keep`` are graph inputs; ``keep``'s loaded."""
    stand_in = copy.deepcopy(model)
    moved = {}
    for tensor in list(stand_in.graph.initializer):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        if tensor.name in keep:
            load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
            continue
        moved[tensor.name] = tensor
        stand_in.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                        list(tensor.dims)))
        stand_in.graph.initializer.remove(tensor)
    return stand_in, {name: copy.deepcopy(t) for name, t in moved.items()}


def quantize_static_groups(source: Path, model: onnx.ModelProto, sources: dict[str, Source], nodes: list[str],
                           calibration: Iterable, folder: Path) -> onnx.ModelProto:
    """``model`` (the fp32 stage at ``source``, loaded without weights) with ``nodes`` static int8 QDQ.

    The result's large weights are still the fp32 stage's (``sources``); what the quantizer made
    (the convolutions' int8 weights) is inline.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    options = dict(quant_format=QuantFormat.QDQ, nodes_to_quantize=nodes, per_channel=True,
                   activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                   calibrate_method=CalibrationMethod.MinMax,
                   extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused contrib ops: no inference
                   use_external_data_format=True)
    chosen = set(nodes)
    targets = [n for n in model.graph.node if n.name in chosen]
    cache = folder / "ranges.json"
    prefix = source.with_name(folder.name + "-prefix.onnx")  # beside the source: its weights resolve there
    # "" is the root logger, which onnxruntime's quantizer logs through.
    with quiet(""):
        try:
            _prefix(source, model, sorted({o for n in targets for o in n.output}), prefix)
            quantize_static(str(prefix), str(folder / "prefix-int8.onnx"), calibration,
                            calibration_cache_path=str(cache), **options)
        finally:
            prefix.unlink(missing_ok=True)
        stand_in, moved = _standing_in(model, source.parent, {i for n in targets for i in n.input})
        onnx.save(stand_in, str(folder / "stand-in.onnx"))
        del stand_in
        quantize_static(str(folder / "stand-in.onnx"), str(folder / "static.onnx"), None,
                        calibration_cache_path=str(cache), **options)
    result = onnx.load(str(folder / "static.onnx"))  # the convolutions' weights only: small
    inputs = [i for i in result.graph.input if i.name not in moved]
    del result.graph.input[:]
    result.graph.input.extend(inputs)
    result.graph.initializer.extend(t for name, t in moved.items() if name in sources)
    return result
