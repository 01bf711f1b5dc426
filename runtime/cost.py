"""What a bundle costs: multiply-accumulates per second of audio, counted from its own graph.

Whether a bundle keeps up on a board is arithmetic over throughput, so the arithmetic is counted,
not assumed: every MatMul, Gemm and Conv (and their int8 and fused forms) contributes the product
of its shapes, ``output elements x reduction length``.

Shapes come from onnxruntime itself: the bundle runs once per probe length with the profiler on
(graph optimizations off, so the profiled nodes are the bundle's own), and the profiler records
each node's input and output shapes. Every shape in these encoders is an affine function of the
frame count (the CNN's strided lengths included, on the 320-sample grid), so three short probes
fix each dimension exactly and the count for 30 s, or for one streaming window, is evaluated
from them without running 30 s of audio. Where a dimension is not affine, the bundle is run at
the length asked for instead.

Stages: ``cnn`` (convolutions of the front end; for logmel, its DFT and mel filterbank),
``positional_conv`` (grouped convolutions: the transformer's positional embedding),
``transformer_linear`` (products with a learned matrix: projections, feed-forward, feature
projection), ``attention`` (products of two activations: query x key, weights x value) and
``nearest_centroid`` (the product with the centroids).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .constants import FRAME_MS, SAMPLE_RATE, frame_count, samples_for_frames
from .errors import BundleError
from .bundle.graph_rules import check_graph_rules
from .process.interrupt import stoppable
from .bundle.manifest import Manifest
from .bundle.stream_entry import KvEntry
from .process.memory_limit import bounded_arena, limit_mb, memory_message, remember_limit
from .bundle.onnx_nodes import Node, read_graph
from .bundle.session import INPUT_NAME, OUTPUT_NAME, inference_session, require_self_contained, session_options
from .stream import DEFAULT_CHUNK_MS, DEFAULT_CONTEXT_MS, DEFAULT_LOOKAHEAD_MS, default_lengths

STAGES = ("cnn", "positional_conv", "transformer_linear", "attention", "nearest_centroid")
OFFLINE_SECONDS = 30.0  # the offline count is for one pass over this much audio
PROBE_FRAMES = (40, 80, 120)  # three lengths: two fix an affine shape, the third checks it
PROBE_SEED = 0
STACKED_POSITIONAL = ("data2vec-audio",)  # positional embedding: a stack of convolutions, not one
NEAREST_NAME = "nearest"  # the exporter's module name for the nearest-centroid step

# operator -> (index of the left operand, index of the right operand / weight)
MATMUL_OPS = {"MatMul": (0, 1), "FusedMatMul": (0, 1), "MatMulInteger": (0, 1), "DynamicQuantizeMatMul": (0, 1),
              "MatMulIntegerToFloat": (0, 1), "QLinearMatMul": (0, 3)}
GEMM_OPS = {"Gemm": (0, 1), "FusedGemm": (0, 1)}
CONV_OPS = {"Conv": (0, 1), "FusedConv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
# Operators that multiply matrices but whose cost this counter does not derive; reported by name.
UNCOUNTED_OPS = {"Attention", "MultiHeadAttention", "QAttention", "GroupQueryAttention", "Einsum", "ConvTranspose",
                 "MatMulNBits", "NhwcConv", "QLinearConvTranspose", "MatMulFpQ4", "QOrderedMatMul"}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class NodeShapes:
    op_type: str
    inputs: tuple[Shape, ...]
    outputs: tuple[Shape, ...]


def _numel(shape: Shape) -> int:
    return int(np.prod(shape, dtype=object)) if shape else 1


def node_macs(op_type: str, inputs: tuple[Shape, ...], outputs: tuple[Shape, ...]) -> int:
    """Multiply-accumulates of one node from its shapes (0 for operators that multiply no matrices).

    MatMul: ``out x K`` with K the left operand's reduction length, read from its size so that a
    fused transpose does not matter; Gemm: ``M x N x K``; Conv: ``out x (C_in / group) x kernel``,
    which is ``out x`` the weight's size per output channel.
    """
    out = outputs[0] if outputs else ()
    if op_type in MATMUL_OPS:
        a = inputs[MATMUL_OPS[op_type][0]]
        if len(a) < 2 or len(out) < 2:
            reduction = a[-1] if a else 1
        else:
            rows = out[-2]
            reduction = _numel(a) // max(1, _numel(a[:-2]) * rows)
        return _numel(out) * reduction
    if op_type in GEMM_OPS:
        a = inputs[GEMM_OPS[op_type][0]]
        return _numel(out) * (_numel(a) // max(1, out[0])) if out else 0
    if op_type in CONV_OPS:
        weight = inputs[CONV_OPS[op_type][1]]
        return _numel(out) * _numel(weight[1:])
    return 0


def _weight_index(op_type: str) -> int | None:
    for table in (MATMUL_OPS, GEMM_OPS, CONV_OPS):
        if op_type in table:
            return table[op_type][1]
    return None


def _stage(name: str, shapes: NodeShapes, nodes: dict[str, Node], constant: set[str], manifest: Manifest) -> str:
    """Which stage a counted node belongs to, from its operator, its operands and its name."""
    op_type, node = shapes.op_type, nodes.get(name)
    if op_type in CONV_OPS:
        grouped = node is not None and node.attribute("group", 1) > 1
        return "positional_conv" if grouped and manifest.encoder_type != "logmel" else "cnn"
    index = _weight_index(op_type)
    operands = [node.inputs[i] for i in (MATMUL_OPS.get(op_type) or GEMM_OPS[op_type])
                if i < len(node.inputs)] if node else []
    weight = shapes.inputs[index] if index is not None and index < len(shapes.inputs) else ()
    if NEAREST_NAME in name.lower().split("/") or (tuple(weight[-2:]) == (manifest.dim, manifest.k)
                                                   and any(o in constant for o in operands)):
        return "nearest_centroid"
    if operands and not any(o in constant for o in operands):
        return "attention"
    return "cnn" if manifest.encoder_type == "logmel" else "transformer_linear"


def _shapes(entries: list[dict]) -> tuple[Shape, ...]:
    """Profiler ``input_type_shape`` entries (``[{"float": [1, 400]}, ...]``) as shape tuples."""
    shapes = []
    for entry in entries:
        dims = next(iter(entry.values()), []) if isinstance(entry, dict) else []
        shapes.append(tuple(int(d) for d in dims))
    return tuple(shapes)


def complete_shapes(shapes: NodeShapes, node: Node | None, constant_dims: dict[str, Shape]) -> NodeShapes:
    """Put back the constant operands the profiler leaves out (weights onnxruntime pre-packed).

    The profiler lists the shapes of the inputs it saw, in order; a constant whose shape is not
    next in that list was pre-packed, and its shape comes from the graph instead.
    """
    if node is None:
        return shapes
    profiled, inputs = list(shapes.inputs), []
    for name in node.inputs:
        if not name:
            inputs.append(())
            continue
        known = constant_dims.get(name)
        if known is not None and (not profiled or profiled[0] != known):
            inputs.append(known)
        else:
            inputs.append(profiled.pop(0) if profiled else ())
    return NodeShapes(shapes.op_type, tuple(inputs), shapes.outputs)


def profile_shapes(bundle: str | os.PathLike, frames: tuple[int, ...]) -> list[dict[str, NodeShapes]]:
    """Run the bundle once per frame count with the profiler on; each node's shapes, per run."""
    require_self_contained(bundle)
    check_graph_rules(bundle)
    options = session_options(1)
    limit = limit_mb(os.path.getsize(bundle), max(frames))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_profiling = True
    rng = np.random.default_rng(PROBE_SEED)
    with tempfile.TemporaryDirectory(prefix="audiotok-compute-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = None
        try:
            with bounded_arena(options, limit):
                session = inference_session(bundle, options, ["CPUExecutionProvider"])
            remember_limit(session, limit)
            for count in frames:
                audio = (0.1 * rng.standard_normal(samples_for_frames(count))).astype(np.float32)
                with stoppable() as run_options:  # Ctrl-C/SIGTERM stop the run at once
                    session.run([OUTPUT_NAME], {INPUT_NAME: audio[None, :]}, run_options)
            profile = Path(session.end_profiling())
        except Exception as exc:  # onnxruntime raises several private exception types
            too_big = memory_message(str(exc), session)
            if too_big is not None:
                raise BundleError(f"{bundle}: {too_big}") from None
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{bundle}: could not run the bundle to count its compute ({detail})") from None
        events = json.loads((profile if profile.is_absolute() else Path(tmp) / profile.name).read_text())
    runs: list[dict[str, NodeShapes]] = [{} for _ in frames]
    seen: Counter = Counter()
    for event in sorted((e for e in events if isinstance(e, dict) and e.get("cat") == "Node"
                         and str(e.get("name", "")).endswith("_kernel_time")), key=lambda e: e.get("ts", 0)):
        name = event["name"][: -len("_kernel_time")]
        run = seen[name]
        seen[name] += 1
        if run >= len(runs):
            continue
        args = event.get("args", {})
        runs[run][name] = NodeShapes(str(args.get("op_name", "")), _shapes(args.get("input_type_shape", [])),
                                     _shapes(args.get("output_type_shape", [])))
    return runs


@dataclass(frozen=True)
class AffineNode:
    """One counted node: its stage and each shape dimension as ``base + slope x frames``."""

    name: str
    op_type: str
    stage: str
    base: tuple[tuple[int, ...], ...]  # each input's dims, then the first output's, at 0 frames
    slope: tuple[tuple[int, ...], ...]  # and their change per frame

    def macs(self, frames: int) -> int:
        dims = tuple(tuple(b + s * frames for b, s in zip(base, slope)) for base, slope in zip(self.base, self.slope))
        return node_macs(self.op_type, dims[:-1], dims[-1:])


def _affine(name: str, runs: list[NodeShapes], stage: str) -> AffineNode | None:
    """Fit each dim on the first two probes and check the third; None if any dim is not affine."""
    (f0, f1, f2), (s0, s1, s2) = PROBE_FRAMES, runs
    shapes = [s.inputs + s.outputs[:1] for s in (s0, s1, s2)]
    if len({len(s) for s in shapes}) != 1 or any(len({len(d) for d in dims}) != 1 for dims in zip(*shapes)):
        return None
    base, slope = [], []
    for d0, d1, d2 in zip(*shapes):
        b, s = [], []
        for v0, v1, v2 in zip(d0, d1, d2):
            step, rest = divmod(v1 - v0, f1 - f0)
            if rest or v0 + step * (f2 - f0) != v2:
                return None
            b.append(v0 - step * f0)
            s.append(step)
        base.append(tuple(b))
        slope.append(tuple(s))
    return AffineNode(name, s0.op_type, stage, tuple(base), tuple(slope))


class CostModel:
    """Multiply-accumulates of a bundle per stage, for any input length, from three profiled probes."""

    def __init__(self, bundle: str | os.PathLike, manifest: Manifest) -> None:
        self.bundle = Path(bundle)
        self.manifest = manifest
        self.graph = read_graph(bundle)
        nodes, constant = {node.name: node for node in self.graph.nodes}, self.graph.constant_values()
        self._nodes, self._constant_dims = nodes, self.graph.constant_dims()
        runs = [self._complete(run) for run in profile_shapes(bundle, PROBE_FRAMES)]
        self.uncounted = sorted({s.op_type for s in runs[0].values() if s.op_type in UNCOUNTED_OPS})
        self.nodes: list[AffineNode] = []
        self._exact: dict[str, str] | None = None  # name -> stage, when shapes are not all affine
        for name, shapes in runs[0].items():
            if _weight_index(shapes.op_type) is None:
                continue
            stage = _stage(name, shapes, nodes, constant, manifest)
            fitted = _affine(name, [shapes, *(r.get(name, shapes) for r in runs[1:])], stage)
            if fitted is None:
                self._exact = {n: _stage(n, s, nodes, constant, manifest)
                               for n, s in runs[0].items() if _weight_index(s.op_type) is not None}
                break
            self.nodes.append(fitted)

    def macs(self, frames: int) -> dict[str, int]:
        """Multiply-accumulates by stage for one pass over ``frames`` frames of audio."""
        totals = dict.fromkeys(STAGES, 0)
        if self._exact is None:
            for node in self.nodes:
                totals[node.stage] += node.macs(frames)
            return totals
        for name, shapes in self._complete(profile_shapes(self.bundle, (frames,))[0]).items():
            if name in self._exact:
                totals[self._exact[name]] += node_macs(shapes.op_type, shapes.inputs, shapes.outputs)
        return totals

    def _complete(self, run: dict[str, NodeShapes]) -> dict[str, NodeShapes]:
        return {name: complete_shapes(shapes, self._nodes.get(name), self._constant_dims)
                for name, shapes in run.items()}

    def parameters(self) -> int:
        return sum(_numel(dims) for dims in self.graph.initializers.values())


def to_gmac(macs: float) -> float:
    """Billions, to four significant digits (a tiny test bundle's count stays visible)."""
    return float(f"{macs / 1e9:.4g}")


def stream_window_frames(chunk_ms: float = DEFAULT_CHUNK_MS, lookahead_ms: float = DEFAULT_LOOKAHEAD_MS,
                         context_ms: float = DEFAULT_CONTEXT_MS) -> int:
    """Frames one steady-state streaming window computes: context + chunk + lookahead."""
    return int(round((context_ms + chunk_ms + lookahead_ms) / FRAME_MS))


def stream_cost(model: CostModel, chunk_ms: float = DEFAULT_CHUNK_MS, lookahead_ms: float = DEFAULT_LOOKAHEAD_MS,
                context_ms: float = DEFAULT_CONTEXT_MS, *, cached: bool = False, kv: KvEntry | None = None,
                stacked_positional: bool = False) -> dict:
    """A stream's steady-state cost: one window per chunk, each of context + chunk + lookahead; with
    ``cached`` (the bundle's stream entry point) the CNN runs on the chunk's new frames only; with ``kv``
    (its attention cache) the transformer runs on chunk + lookahead frames, its attention over those and
    the context's cached keys, and the positional convolution at those frames only (a stack of them,
    ``stacked_positional`` as data2vec-audio's, from ``kv.reach`` frames before). The feature projection of the up to ``kv.reach``
    CNN frames before them is not counted (under 1% of a HuBERT-base window)."""
    window = stream_window_frames(chunk_ms, lookahead_ms, context_ms)
    if kv is not None:
        computed = stream_window_frames(chunk_ms, lookahead_ms, 0)
        stages = model.macs(computed)
        context = stream_window_frames(0, 0, context_ms)
        positional = model.macs(computed + kv.reach)["positional_conv"] if stacked_positional else stages["positional_conv"]
        per_window = (model.macs(stream_window_frames(chunk_ms, 0, 0))["cnn"] + positional
                      + stages["transformer_linear"] + stages["nearest_centroid"]
                      + stages["attention"] * (context + computed) / max(computed, 1))
    else:
        stages = model.macs(window)
        per_window = sum(stages.values())
        if cached:
            chunk = stream_window_frames(chunk_ms, 0, 0)
            per_window += model.macs(chunk)["cnn"] - stages["cnn"]
    per_second = 1000.0 / chunk_ms
    return {"chunk_ms": chunk_ms, "lookahead_ms": lookahead_ms, "context_ms": context_ms,
            "window_frames": window, "windows_per_second": round(per_second, 4),
            "gmac_per_window": to_gmac(per_window), "gmac_per_second": to_gmac(per_window * per_second)}


def bundle_stream_cost(model: CostModel, manifest: Manifest, setting: tuple[float, float, float] | None = None) -> dict:
    """The cost of ``setting`` (default: the bundle's default stream) as a stream of this bundle runs it:
    with its stream entry point and attention cache where it has them."""
    entry = manifest.stream_entry
    kv = entry.kv if entry is not None else None
    setting = setting or default_lengths(entry is not None, kv is not None)
    return stream_cost(model, *setting, cached=entry is not None, kv=kv,
                       stacked_positional=manifest.encoder_type in STACKED_POSITIONAL)


def bundle_compute(bundle: str | os.PathLike, manifest: Manifest, model: CostModel | None = None) -> dict:
    """``info``'s ``compute``: GMAC per audio second at 30 s by stage, parameters, size, stream cost."""
    model = model or CostModel(bundle, manifest)
    frames = frame_count(int(OFFLINE_SECONDS * SAMPLE_RATE))
    seconds = samples_for_frames(frames) / SAMPLE_RATE
    stages = model.macs(frames)
    return {
        "input_seconds": OFFLINE_SECONDS,
        "gmac_per_second": to_gmac(sum(stages.values()) / seconds),
        "stages_gmac_per_second": {stage: to_gmac(macs / seconds) for stage, macs in stages.items()},
        "parameters": model.parameters(),
        "file_bytes": os.path.getsize(bundle),
        "stream": bundle_stream_cost(model, manifest),
        "uncounted_operators": model.uncounted,
    }
