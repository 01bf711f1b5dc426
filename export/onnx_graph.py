"""torch -> ONNX for the unit graph: one deterministic step with named, dynamic axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from audiotok.runtime.constants import MANIFEST_KEY, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from audiotok.runtime.bundle.manifest import Manifest
from audiotok.runtime.bundle.session import INPUT_NAME, OUTPUT_NAME
from audiotok.runtime.bundle.stream_entry import (CACHE, CNN_STATS, CONTEXT, KV, ON, SKIP, STATS_ROWS,
                                                  WAVE_STATS, StreamEntry)

from .container import write_bundle
from .graph import UnitGraph
from .stream_graph import StreamableGraph
from .quiet import quiet

OPSET = 18
TRACE_SAMPLES = 3 * SAMPLE_RATE  # example input length for tracing; the length axis stays dynamic


FEATURES_NAME = "features"  # the debug output: hidden_states[layer], [batch, frames, dim] f32
STREAM_TRACE_FRAMES = 10  # example cached frames for tracing; the axis stays dynamic (0 frames included)
CONTEXT_TRACE_FRAMES, KV_TRACE_FRAMES = 7, 13  # the same for the attention cache's inputs (distinct sizes)


def _stream_examples(entry: StreamEntry) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    examples = (torch.zeros(1, STREAM_TRACE_FRAMES, entry.frame_dim).uniform_(-0.5, 0.5, generator=generator),
                torch.tensor(True), torch.tensor(80, dtype=torch.int64),
                torch.zeros(STATS_ROWS, entry.stats_channels, dtype=torch.float64),
                torch.zeros(STATS_ROWS, 1, dtype=torch.float64))
    if entry.kv is not None:
        examples += (torch.zeros(1, CONTEXT_TRACE_FRAMES, entry.frame_dim).uniform_(-0.5, 0.5, generator=generator),
                     torch.zeros(entry.kv.layers, 2, KV_TRACE_FRAMES, entry.kv.dim).uniform_(-0.5, 0.5,
                                                                                            generator=generator))
    return examples


def export_graph(graph: UnitGraph | StreamableGraph, path: Path) -> None:
    """Write ``graph`` as ONNX: input ``waveform`` [batch, samples] f32, output ``units`` [batch, frames] i64
    (and ``features`` when the graph returns them; and the stream entry's inputs and outputs, named as in
    runtime/bundle/stream_entry.py, for a :class:`StreamableGraph`)."""
    graph.eval()
    example = torch.zeros(1, TRACE_SAMPLES).uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(0))
    samples = torch.export.Dim("samples", min=RECEPTIVE_FIELD_SAMPLES, max=2**31 - 1)
    # The stream entry's cache is one stream's: its graph takes a batch of one, said here rather than
    # found by a first trace that fails and is redone (which cost a third of a small encoder's export).
    batch = {} if isinstance(graph, StreamableGraph) else {0: torch.export.Dim("batch", max=1024)}
    shapes = {"waveform": {**batch, 1: samples}}
    outputs = [OUTPUT_NAME, FEATURES_NAME] if graph.with_features else [OUTPUT_NAME]
    inputs, examples = [INPUT_NAME], (example,)
    if isinstance(graph, StreamableGraph):
        entry = graph.entry
        inputs, outputs = inputs + list(entry.inputs), outputs + list(entry.outputs)
        examples += _stream_examples(entry)
        shapes.update({CACHE: {1: torch.export.Dim("cached_frames", min=0, max=2**24)},
                       ON: None, SKIP: None, CNN_STATS: None, WAVE_STATS: None})
        if entry.kv is not None:
            shapes.update({CONTEXT: {1: torch.export.Dim("context_frames", min=0, max=2**24)},
                           KV: {2: torch.export.Dim("kv_frames", min=0, max=2**24)}})
    with quiet("torch.onnx"), torch.no_grad():
        program = torch.onnx.export(graph, examples, dynamo=True, dynamic_shapes=shapes, opset_version=OPSET,
                                    input_names=inputs, output_names=outputs, verbose=False,
                                    optimize=True)
        _contiguous_initializers(program.model)
        program.save(str(path), external_data=True)  # weights beside it: any size fits


def _contiguous_initializers(model) -> None:
    """Give each folded weight C-ordered storage before it is written. The exporter's constant folding
    leaves a transposed Linear weight as a strided numpy view, which numpy writes to a file one element
    at a time (about 50 ns each: half a minute for 2 GB of weights); copying one tensor at a time into
    C order first writes the same bytes several times faster."""
    from onnx_ir import Tensor

    for value in model.graph.initializers.values():
        tensor = value.const_value
        if type(tensor) is Tensor and isinstance(tensor.raw, np.ndarray) and not tensor.raw.flags.c_contiguous:
            value.const_value = Tensor(np.ascontiguousarray(tensor.raw), dtype=tensor.dtype, name=tensor.name,
                                       doc_string=tensor.doc_string)


def stream_defaults(entry: StreamEntry) -> list[onnx.TensorProto]:
    """Initializers named like the stream inputs: what the graph uses when a caller (the offline path)
    omits them. No cache and the input's own statistics: exactly the offline graph."""
    values = {CACHE: np.zeros((1, 0, entry.frame_dim), np.float32),
              ON: np.array(False),
              SKIP: np.array(0, np.int64),
              CNN_STATS: np.zeros((STATS_ROWS, entry.stats_channels), np.float64),
              WAVE_STATS: np.zeros((STATS_ROWS, 1), np.float64)}
    if entry.kv is not None:
        values.update({CONTEXT: np.zeros((1, 0, entry.frame_dim), np.float32),
                       KV: np.zeros((entry.kv.layers, 2, 0, entry.kv.dim), np.float32)})
    return [numpy_helper.from_array(value, name) for name, value in values.items()]


def attach_manifest(source: Path, target: Path, manifest: Manifest, *, keep_features: bool = False,
                    layout: str = "auto") -> str:
    """Write the ONNX model at ``source`` to ``target`` with the manifest in its metadata, in ``layout``
    (container.py; returns the one written); ``features`` is dropped unless ``keep_features`` (its
    nodes stay: units are computed from them). With a manifest ``stream`` entry the stream inputs get
    their default initializers; without one, the stream outputs (if any) are dropped."""
    model = onnx.load(str(source), load_external_data=False)  # weights stay in their files until written
    entry = manifest.stream_entry
    wanted = {OUTPUT_NAME} | ({FEATURES_NAME} if keep_features else set()) | (set(entry.outputs) if entry else set())
    kept = [o for o in model.graph.output if o.name in wanted]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    if entry is not None:
        present = {t.name for t in model.graph.initializer}
        declared = {i.name for i in model.graph.input}
        for default in stream_defaults(entry):
            if default.name not in declared:  # unused by this encoder's stream path, and pruned by the fusions
                model.graph.input.append(onnx.helper.make_tensor_value_info(default.name, default.data_type,
                                                                            list(default.dims)))
            if default.name not in present:
                model.graph.initializer.append(default)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = MANIFEST_KEY, manifest.to_json()
    model.producer_name = "audiotok"
    return write_bundle(model, Path(source).parent, Path(target), layout)
