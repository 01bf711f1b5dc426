"""int8 for CPUs: quantize the operators where it pays, keep fp32 where it hurts, by measurement.

The fp32 graph's heavy operators fall into groups, each with the scheme that measured best for it
on a HuBERT-base-size encoder (docs/speed.md has the numbers):

``linear``    the transformer's projections and feed-forward MatMuls, and the feature projection:
              dynamic int8 (activation range computed per call), per-channel weights. The bulk of
              the transformer's time; runs about 3x faster than fp32 on VNNI CPUs. Dynamic ranges
              need no calibration and follow the loudness of whatever audio comes in; static ranges
              measured no faster and agreed less.
``pos_conv``  the positional (grouped) convolution: static int8 QDQ, per-channel weights,
              calibrated. A few percent faster, and 4x smaller (it is the largest single weight).
``cnn``       the waveform CNN's convolutions after the first: static int8 QDQ, per-channel.
              The biggest time saver, but the most fragile: rounding a CNN activation to 8 bits
              moves every later frame. It is only kept when the measurement says it is harmless.

Always fp32: the first convolution (it sees the raw waveform), normalizations, softmax, the
attention score MatMuls (dynamic int8 there measured slower: the quantization of a frames x
frames matrix costs more than it saves), and the centroid distance with its argmin (near-ties
must resolve as in fp32).

``linear`` is always quantized (it is what an int8 bundle is for); ``pos_conv`` then ``cnn`` are
each tried on top and kept only if the bundle's agreement with torch drops by at most
``GROUP_TOLERANCE``. What was kept, and what a rejected group would have cost, goes into the
manifest.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from audiotok.runtime.errors import SettingsError
from audiotok.runtime.bundle.session import INPUT_NAME

from .centroids import distance_nodes
from .container import copy_stage, external_sources, write_stage
from .linear_int8 import quantize_linear
from .static_int8 import quantize_static_groups

GROUP_TOLERANCE = 0.01  # a group may cost at most 1% of frames (about 3x the noise of 30 s of audio)
LINEAR_INPUT_OPS = {"LayerNormalization", "SkipLayerNormalization", "Gelu", "BiasGelu", "FastGelu", "Reshape",
                    "Transpose"}  # what feeds a transformer projection; a log-mel filterbank is not fed by these
OPTIONAL_GROUPS = ("pos_conv", "cnn")
SCHEMES = {
    "linear": "dynamic int8, per-channel weights",
    "pos_conv": "static int8 QDQ, per-channel weights, calibrated",
    "cnn": "static int8 QDQ, per-channel weights, calibrated",
}


@dataclass(frozen=True)
class Int8Report:
    """What the quantizer did, for the manifest."""

    quantized: dict[str, str]  # group -> scheme
    kept_fp32: dict[str, float] = field(default_factory=dict)  # rejected group -> agreement it would have had
    nodes: dict[str, int] = field(default_factory=dict)  # group -> node count
    calibration: str = ""

    def as_dict(self) -> dict:
        return {"quantized": self.quantized, "kept_fp32": {k: round(v, 6) for k, v in self.kept_fp32.items()},
                "nodes": self.nodes, "calibration": self.calibration, "tolerance": GROUP_TOLERANCE}


def operator_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Node names of the fp32 graph by quantization group (see the module docstring)."""
    weights = {init.name: len(init.dims) for init in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    keep = set(distance_nodes(model).values())
    groups: dict[str, list[str]] = {"linear": [], "pos_conv": [], "cnn": []}
    first_conv = True
    for node in model.graph.node:  # topological order: the first Conv is the one on the waveform
        if node.name in keep:
            continue
        if node.op_type == "Conv" and weights.get(node.input[1]) == 3:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if first_conv:
                first_conv = False
            elif group > 1:
                groups["pos_conv"].append(node.name)
            else:
                groups["cnn"].append(node.name)
        elif node.op_type == "MatMul" and weights.get(node.input[1]) == 2:
            source = producer.get(node.input[0])
            if source is not None and source.op_type in LINEAR_INPUT_OPS:
                groups["linear"].append(node.name)
    return groups


class _Clips:
    """onnxruntime's calibration reader protocol over a list of 16 kHz clips."""

    def __init__(self, clips: Iterable[np.ndarray]) -> None:
        self._clips = iter(list(clips))

    def get_next(self) -> dict[str, np.ndarray] | None:
        clip = next(self._clips, None)
        return None if clip is None else {INPUT_NAME: np.ascontiguousarray(clip, np.float32)[None]}


def build_int8(source: Path, target: Path, nodes: dict[str, list[str]], calibration: list[np.ndarray]) -> None:
    """Quantize ``nodes`` (group -> names) of the fp32 graph at ``source`` into ``target``.

    The graph is edited without its weights and each weight is quantized (or copied) into
    ``target``'s data file one tensor at a time, so the peak is one tensor, not a model: the static
    groups through onnxruntime's quantizer on a graph that holds only their own weights (calibrated
    on the part of the graph that computes them), the projections here, as onnxruntime's dynamic
    quantizer writes them (linear_int8.py).
    """
    model = onnx.load(str(source), load_external_data=False)
    sources = external_sources(model, source.parent)
    static = [n for g in OPTIONAL_GROUPS for n in nodes.get(g, [])]
    with tempfile.TemporaryDirectory(prefix="audiotok-int8-", dir=source.parent) as tmp:
        if static:
            model = quantize_static_groups(source, model, sources, static, _Clips(calibration), Path(tmp))
        payloads = quantize_linear(model, sources, nodes.get("linear", []))
        write_stage(model, target, payloads)


def quantize_int8(source: Path, target: Path, calibration: list[np.ndarray], calibration_audio: str,
                  agreement: Callable[[Path], float], progress: Callable[[str], None] = lambda _: None) -> Int8Report:
    """Build the int8 graph, trying each optional group and keeping it only if agreement holds."""
    groups = operator_groups(onnx.load(str(source), load_external_data=False))
    if not groups["linear"]:
        raise SettingsError("--precision int8: this encoder has no transformer MatMuls to quantize (the log-mel "
                            "front end is one convolution on the raw waveform, kept fp32); use --precision fp32")
    chosen = {"linear": groups["linear"]}
    kept_fp32: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="audiotok-int8-") as tmp:
        best = Path(tmp) / "linear.onnx"
        progress("int8: transformer projections")
        build_int8(source, best, chosen, calibration)
        score = agreement(best)
        for group in OPTIONAL_GROUPS:
            if not groups[group]:
                continue
            progress(f"int8: trying {group}")
            trial = Path(tmp) / f"{group}.onnx"
            build_int8(source, trial, {**chosen, group: groups[group]}, calibration)
            trial_score = agreement(trial)
            if trial_score >= score - GROUP_TOLERANCE:
                chosen[group], score, best = groups[group], trial_score, trial
            else:
                kept_fp32[group] = trial_score
        copy_stage(best, target)
    return Int8Report(quantized={g: SCHEMES[g] for g, names in chosen.items() if names}, kept_fp32=kept_fp32,
                      nodes={g: len(n) for g, n in groups.items()}, calibration=calibration_audio)
