"""torch -> ONNX for the unit graph: one deterministic step with named, dynamic axes."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from audiotok.runtime.constants import MANIFEST_KEY, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from audiotok.runtime.bundle.manifest import Manifest
from audiotok.runtime.bundle.session import INPUT_NAME, OUTPUT_NAME

from .container import write_bundle
from .graph import UnitGraph
from .quiet import quiet

OPSET = 18
TRACE_SAMPLES = 3 * SAMPLE_RATE  # example input length for tracing; the length axis stays dynamic


FEATURES_NAME = "features"  # the debug output: hidden_states[layer], [batch, frames, dim] f32


def export_graph(graph: UnitGraph, path: Path) -> None:
    """Write ``graph`` as ONNX: input ``waveform`` [batch, samples] f32, output ``units`` [batch, frames] i64
    (and ``features`` when the graph returns them)."""
    graph.eval()
    example = torch.zeros(1, TRACE_SAMPLES).uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(0))
    shapes = {"waveform": {0: torch.export.Dim("batch", max=1024),
                           1: torch.export.Dim("samples", min=RECEPTIVE_FIELD_SAMPLES, max=2**31 - 1)}}
    outputs = [OUTPUT_NAME, FEATURES_NAME] if graph.with_features else [OUTPUT_NAME]
    with quiet("torch.onnx"), torch.no_grad():
        program = torch.onnx.export(graph, (example,), dynamo=True, dynamic_shapes=shapes, opset_version=OPSET,
                                    input_names=[INPUT_NAME], output_names=outputs, verbose=False,
                                    optimize=True)
        program.save(str(path), external_data=True)  # weights beside it: any size fits


def attach_manifest(source: Path, target: Path, manifest: Manifest, *, keep_features: bool = False,
                    layout: str = "auto") -> str:
    """Write the ONNX model at ``source`` to ``target`` with the manifest in its metadata, in ``layout``
    (container.py; returns the one written); outputs other than ``units`` are dropped unless
    ``keep_features`` (their nodes stay: units are computed from them)."""
    model = onnx.load(str(source), load_external_data=False)  # weights stay in their files until written
    if not keep_features:
        kept = [o for o in model.graph.output if o.name == OUTPUT_NAME]
        del model.graph.output[:]
        model.graph.output.extend(kept)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = MANIFEST_KEY, manifest.to_json()
    model.producer_name = "audiotok"
    return write_bundle(model, Path(source).parent, Path(target), layout)
