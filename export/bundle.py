"""Building a bundle: encoder + centroids -> checked, self-describing ONNX file, in one precision.

Steps: load the encoder cut at its layer; read the centroids and check them against the layer
(and against their training sidecar); compute the torch float32 units of the parity audio with the
unmodified encoder; export one graph from an export-ready copy (prepare.py); apply the graph
optimizations once (optimize.py); derive the requested precision (fp16.py, quantize.py); run that
graph with onnxruntime and compare its units with torch's; write the manifest (with the measured
agreement) into the model; rename into place. Below ``min_agreement`` nothing is written.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from audiotok import __version__
from audiotok.models import Encoder, load_encoder
from audiotok.runtime.audio import file_blocks, find_audio_files
from audiotok.runtime.constants import RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from audiotok.runtime.errors import AudiotokError, SettingsError
from audiotok.runtime.manifest import PRECISIONS, Manifest
from audiotok.runtime.output import atomic_path
from audiotok.runtime.tokenizer import Tokenizer
from audiotok.train.sidecar import read_sidecar

from .centroids import Centroids, CentroidsError, load_centroids
from .fp16 import to_fp16
from .graph import UnitGraph
from .onnx_graph import OPSET, attach_manifest, export_graph
from .optimize import optimize_graph
from .parity import Agreement, graph_units_fn, measure_agreement, reference_units
from .prepare import prepare_for_export
from .probe_audio import pseudo_speech
from .quantize import quantize_int8

PARITY_SECONDS = 30.0  # total audio compared at export
PARITY_CLIP_SECONDS = 10.0
CALIBRATION_SECONDS = 30.0  # audio the int8 activation ranges are calibrated on

# Default --min-agreement per precision. fp32 must reproduce torch (only float summation order
# differs). fp16 keeps 11 mantissa bits and int8 activations 8; both move frames whose two nearest
# centroids are nearly tied. Measured on a HuBERT-base-size encoder (docs/speed.md) fp16 moved
# under 1% of frames and int8 under 2.5%; the defaults leave about twice that, so a variant fails only
# when it is broken or the model is unusually fragile, never for ordinary rounding.
DEFAULT_MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.98, "int8": 0.95}
INSTEAD = {
    "int8": "use --precision fp32 on CPU (or fp16 on a GPU) for exact units, or lower --min-agreement",
    "fp16": "use --precision fp32 for exact units, or lower --min-agreement",
    "fp32": "the exported graph itself differs from torch; check --normalize and --layer",
}

Progress = Callable[[str], None]


class AgreementError(AudiotokError):
    """The exported graph does not reproduce the torch units closely enough."""


@dataclass(frozen=True)
class ExportConfig:
    model: str
    centroids: str
    output: str
    layer: int | None = None
    normalize: str = "auto"
    precision: str = "fp32"
    min_agreement: float | None = None  # default: DEFAULT_MIN_AGREEMENT[precision]
    audio: list[str] = field(default_factory=list)  # parity audio; default: training data, else synthetic
    calibration: list[str] = field(default_factory=list)  # int8 calibration audio; default: the parity audio
    providers: list[str] | None = None  # where the final agreement is measured (default CPU)

    @property
    def required_agreement(self) -> float:
        return DEFAULT_MIN_AGREEMENT[self.precision] if self.min_agreement is None else self.min_agreement


def _check_pairing(encoder: Encoder, centroids: Centroids, sidecar: dict | None) -> None:
    spec = encoder.spec
    if sidecar is not None:
        trained = sidecar.get("encoder", {})
        if sidecar.get("layer") != spec.layer:
            raise CentroidsError(f"--centroids {centroids.source} were fitted on layer {sidecar.get('layer')} "
                                 f"of {trained.get('name')}, not layer {spec.layer}: pass --layer {sidecar.get('layer')}")
        same = trained.get("name") == spec.name or (
            trained.get("config_sha256") and trained.get("config_sha256") == spec.config_sha256)
        if not same:
            raise CentroidsError(f"--centroids {centroids.source} were fitted on {trained.get('name')}, "
                                 f"not on --model {spec.name}")
    if centroids.dim != spec.dim:
        raise CentroidsError(f"--centroids {centroids.source} have dimension {centroids.dim}, but layer "
                             f"{spec.layer} of {spec.name} gives {spec.dim}-dimensional features")


def audio_clips(paths: list[str], total_seconds: float, clip_seconds: float) -> tuple[list[np.ndarray], str]:
    """Up to ``clip_seconds`` from the start of each file, until ``total_seconds``; and a description."""
    clips, total = [], 0.0
    for path in find_audio_files(paths):
        clip = np.concatenate(list(file_blocks(path)))[: int(clip_seconds * SAMPLE_RATE)]
        if len(clip) >= RECEPTIVE_FIELD_SAMPLES:
            clips.append(clip)
            total += len(clip) / SAMPLE_RATE
        if total >= total_seconds:
            break
    return clips, f"{len(clips)} files, {total:.1f} s"


def _parity_clips(config: ExportConfig, sidecar: dict | None) -> tuple[list[np.ndarray], str]:
    paths = config.audio or [p for p in (sidecar or {}).get("data", []) if Path(p).exists()]
    if paths:
        clips, audio = audio_clips(paths, PARITY_SECONDS, PARITY_CLIP_SECONDS)
        if clips:
            return clips, audio
    n = int(PARITY_SECONDS / PARITY_CLIP_SECONDS)
    return [pseudo_speech(PARITY_CLIP_SECONDS, seed=i) for i in range(n)], f"synthetic, {PARITY_SECONDS:.0f} s"


def _calibration_clips(config: ExportConfig, parity: list[np.ndarray], audio: str) -> tuple[list[np.ndarray], str]:
    if not config.calibration:
        return parity, audio
    clips, described = audio_clips(config.calibration, CALIBRATION_SECONDS, PARITY_CLIP_SECONDS)
    if not clips:
        raise SettingsError(f"--calibration {' '.join(config.calibration)}: no audio of at least 25 ms found")
    return clips, described


def _provenance(encoder: Encoder, centroids: Centroids, sidecar: dict | None) -> dict:
    training = None
    if sidecar is not None:
        training = {key: sidecar.get(key) for key in ("frames", "hours", "files", "percent", "seed", "inertia",
                                                      "clusters_used", "perplexity", "kmeans")}
    return {
        "encoder": asdict(encoder.spec),
        "centroids": centroids.provenance(),
        "training": training,
        "versions": {"audiotok": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
    }


def _check_config(config: ExportConfig) -> None:
    if config.precision not in PRECISIONS:
        raise SettingsError(f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if config.min_agreement is not None and not 0.0 <= config.min_agreement <= 1.0:
        raise SettingsError(f"--min-agreement is a fraction of frames in [0, 1], got {config.min_agreement}")


def _variant(config: ExportConfig, fp32: Path, folder: Path, clips: list[np.ndarray], reference: list[np.ndarray],
             calibration: tuple[list[np.ndarray], str], progress: Progress) -> tuple[Path, dict]:
    """The graph in the requested precision, and what was done to make it (for the manifest)."""
    if config.precision == "fp32":
        return fp32, {}
    if config.precision == "fp16":
        progress("fp16 conversion")
        target = folder / "fp16.onnx"
        kept = to_fp16(fp32, target)
        return target, {"fp16": {"kept_fp32_nodes": kept, "io": "float32 waveform in, int64 units out"}}
    target = folder / "int8.onnx"

    def agreement(candidate: Path) -> float:
        return measure_agreement(graph_units_fn(candidate), clips, reference, "").fraction

    report = quantize_int8(fp32, target, calibration[0], calibration[1], agreement, progress)
    return target, {"int8": report.as_dict()}


def export_bundle(config: ExportConfig, progress: Progress = lambda _: None) -> tuple[Manifest, Agreement]:
    """Export, check and write one bundle; raises :class:`AgreementError` (writing nothing) below the bar."""
    _check_config(config)
    centroids = load_centroids(config.centroids)
    # Only audiotok's own .npy centroids have a sidecar; an imported vocabulary needs --layer.
    sidecar = read_sidecar(config.centroids) if centroids.format == "npy" else None
    layer = config.layer if config.layer is not None else (sidecar or {}).get("layer")
    if layer is None and sidecar is None and config.model != "logmel":
        print(f"audiotok: warning: --centroids {config.centroids} do not record their layer and no --layer was "
              f"given: using the encoder's default; pass --layer to be sure", file=sys.stderr)
    if config.model == "logmel" and layer == 0:
        layer = None
    progress("loading the encoder")
    encoder = load_encoder(config.model, layer, config.normalize)
    _check_pairing(encoder, centroids, sidecar)
    spec = encoder.spec
    clips, audio = _parity_clips(config, sidecar)
    calibration = _calibration_clips(config, clips, audio) if config.precision == "int8" else ([], "")
    progress("torch reference units")
    reference = reference_units(UnitGraph(encoder, centroids.array).eval(), clips)
    graph = UnitGraph(prepare_for_export(encoder), centroids.array).eval()
    with tempfile.TemporaryDirectory(prefix="audiotok-export-") as tmp:
        folder = Path(tmp)
        progress("exporting to ONNX")
        export_graph(graph, folder / "graph.onnx")
        progress("optimizing the graph")
        fused = optimize_graph(folder / "graph.onnx", folder / "fp32.onnx", transformer=spec.encoder_type != "logmel")
        variant, details = _variant(config, folder / "fp32.onnx", folder, clips, reference, calibration, progress)
        manifest = Manifest(
            encoder=spec.name, encoder_type=spec.encoder_type, layer=spec.layer, k=centroids.k, dim=spec.dim,
            normalization=spec.normalization, precision=config.precision, opset=OPSET,
            centroids_sha256=centroids.sha256, audiotok_version=__version__, licence=spec.licence,
            provenance={**_provenance(encoder, centroids, sidecar), "optimizations": {"fused": fused}, **details},
        )
        staged = folder / "bundle.onnx"
        attach_manifest(variant, staged, manifest)
        progress("measuring agreement")
        tokenizer = Tokenizer(staged, providers=config.providers)
        agreement = measure_agreement(tokenizer.units_for_window, clips, reference, audio)
        del tokenizer
        required = config.required_agreement
        if agreement.fraction < required:
            raise AgreementError(
                f"the {config.precision} bundle's units equal torch's on {agreement.fraction:.2%} of "
                f"{agreement.frames} frames, below --min-agreement {required:.2%}; nothing was written: "
                f"{INSTEAD[config.precision]}")
        manifest = Manifest(**{**asdict(manifest), "agreement": {**agreement.as_dict("torch fp32"),
                                                                 "min_agreement": required}})
        with atomic_path(config.output) as target:
            attach_manifest(variant, target, manifest)
    return manifest, agreement
