"""Building a bundle: encoder + centroids -> checked, self-describing ONNX file.

Steps: load the encoder cut at its layer; read the centroids and check them against the layer
(and against their training sidecar); export one graph; run it with onnxruntime against the torch
path; write the manifest (with the measured agreement) into the model; rename into place.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from audiotok import __version__
from audiotok.models import Encoder, load_encoder
from audiotok.runtime.audio import file_blocks, find_audio_files
from audiotok.runtime.constants import SAMPLE_RATE
from audiotok.runtime.errors import AudiotokError, SettingsError
from audiotok.runtime.manifest import Manifest
from audiotok.runtime.output import atomic_path
from audiotok.runtime.tokenizer import Tokenizer
from audiotok.train.sidecar import read_sidecar

from .centroids import Centroids, CentroidsError, load_centroids
from .graph import UnitGraph
from .onnx_graph import OPSET, attach_manifest, export_graph
from .parity import Agreement, measure_agreement
from .probe_audio import pseudo_speech

PARITY_SECONDS = 30.0  # total audio compared at export
PARITY_CLIP_SECONDS = 10.0


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
    min_agreement: float = 0.999
    audio: list[str] = field(default_factory=list)  # parity audio; default: training data, else synthetic


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


def _parity_clips(config: ExportConfig, sidecar: dict | None) -> tuple[list[np.ndarray], str]:
    paths = config.audio or [p for p in (sidecar or {}).get("data", []) if Path(p).exists()]
    clips, total = [], 0.0
    if paths:
        for path in find_audio_files(paths):
            clip = np.concatenate(list(file_blocks(path)))[: int(PARITY_CLIP_SECONDS * SAMPLE_RATE)]
            if len(clip) >= 400:
                clips.append(clip)
                total += len(clip) / SAMPLE_RATE
            if total >= PARITY_SECONDS:
                break
    if clips:
        return clips, f"{len(clips)} files, {total:.1f} s"
    n = int(PARITY_SECONDS / PARITY_CLIP_SECONDS)
    return [pseudo_speech(PARITY_CLIP_SECONDS, seed=i) for i in range(n)], f"synthetic, {PARITY_SECONDS:.0f} s"


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


def export_bundle(config: ExportConfig) -> tuple[Manifest, Agreement]:
    if config.precision != "fp32":
        raise SettingsError(f"--precision {config.precision} is not available; use fp32")
    centroids = load_centroids(config.centroids)
    # Only audiotok's own .npy centroids have a sidecar; an imported vocabulary needs --layer.
    sidecar = read_sidecar(config.centroids) if centroids.format == "npy" else None
    layer = config.layer if config.layer is not None else (sidecar or {}).get("layer")
    if layer is None and sidecar is None and config.model != "logmel":
        print(f"audiotok: warning: --centroids {config.centroids} do not record their layer and no --layer was "
              f"given: using the encoder's default; pass --layer to be sure", file=sys.stderr)
    if config.model == "logmel" and layer == 0:
        layer = None
    encoder = load_encoder(config.model, layer, config.normalize)
    _check_pairing(encoder, centroids, sidecar)
    graph = UnitGraph(encoder, centroids.array).eval()
    clips, audio = _parity_clips(config, sidecar)
    spec = encoder.spec
    with tempfile.TemporaryDirectory(prefix="audiotok-export-") as tmp:
        raw = Path(tmp) / "graph.onnx"
        export_graph(graph, raw)
        manifest = Manifest(
            encoder=spec.name, encoder_type=spec.encoder_type, layer=spec.layer, k=centroids.k, dim=spec.dim,
            normalization=spec.normalization, precision=config.precision, opset=OPSET,
            centroids_sha256=centroids.sha256, audiotok_version=__version__, licence=spec.licence,
            provenance=_provenance(encoder, centroids, sidecar),
        )
        attach_manifest(raw, raw, manifest)
        agreement = measure_agreement(graph, Tokenizer(raw), clips, audio)
        if agreement.fraction < config.min_agreement:
            raise AgreementError(
                f"{config.precision} bundle agrees with torch on {agreement.fraction:.4%} of {agreement.frames} "
                f"frames, below --min-agreement {config.min_agreement:.4%}; nothing was written")
        manifest = Manifest(**{**asdict(manifest), "agreement": agreement.as_dict("torch fp32")})
        with atomic_path(config.output) as target:
            attach_manifest(raw, target, manifest)
    return manifest, agreement
