"""Building a bundle: encoder + centroids -> checked, self-describing ONNX file, in one precision.

Steps: load the encoder cut at its layer; read the centroids and check them against the layer
(and against their training sidecar); compute the torch float32 hidden states and units of the
parity audio with the unmodified encoder; export one graph from an export-ready copy (encoder_rewrites.py),
with the hidden states as a second output; apply the graph optimizations once (optimize.py); derive
the requested precision (fp16.py, quantize.py); run that graph with onnxruntime and compare its
units and hidden states with torch's (parity.py); write the manifest (with the measured agreement,
hidden-state error and centroid margin) into the model, without the hidden-state output; rename
into place. Below ``min_agreement`` nothing is written.
"""

from __future__ import annotations

import gc
import platform
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
from audiotok.models.vocabulary_sidecar import RecordedTraining, read_sidecar, sidecar_path
from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.constants import RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from audiotok.runtime.corpus.listing import list_corpus
from audiotok.runtime.errors import AudiotokError, SettingsError
from audiotok.runtime.formats.staging import atomic_path
from audiotok.runtime.log import log
from audiotok.runtime.bundle.manifest import PRECISIONS, Manifest
from audiotok.runtime.audio.preprocess import CHANNEL_MEAN, FEATURE_NORMS, FRAME_RULES, check_choice, parse_channel
from audiotok.runtime.bundle.session import INPUT_NAME, OUTPUT_NAME
from audiotok.runtime.bundle.stream_entry import StreamEntry
from audiotok.runtime.tokenizer import Tokenizer

from .centroids import Centroids, CentroidsError, load_centroids
from .container import LAYOUT_CHOICES
from .encoder_rewrites import prepare_for_export
from .fp16 import to_fp16
from .graph import UnitGraph
from .onnx_graph import FEATURES_NAME, OPSET, attach_manifest, export_graph
from .optimize import optimize_graph
from .parity import (Agreement, Reference, check_min_agreement, graph_units_fn, measure_agreement, measure_fidelity,
                     torch_reference)
from .probe_audio import pseudo_speech
from .quantize import quantize_int8
from .stream_graph import StreamableGraph, stream_split

PARITY_SECONDS = 60.0  # total audio compared at export, where the training (or --audio) audio has that much
PARITY_CLIP_SECONDS = 10.0
# Synthetic parity clips are a little longer than whole frames, so the check covers the trailing
# samples after the last frame (which the encoders normalise over) as real files do.
SYNTHETIC_CLIP_SECONDS = PARITY_CLIP_SECONDS + 237 / SAMPLE_RATE
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
    # Processor options; None: what the centroids' sidecar records, else audiotok's defaults.
    pad_last_frame: bool | None = None  # frame rule "pad" (audioTokenizer's) instead of "floor"
    feature_norm: str | None = None  # "l2": features L2-normalised in the graph before the nearest centroid
    channel: int | str | None = None  # the channel the runtime takes by default: "mean" or an index
    keep_features: bool = False  # debug: the bundle also outputs the layer's hidden states as "features"
    layout: str = "auto"  # "onnx", "container" (one file past 2 GB) or auto: container.py

    @property
    def required_agreement(self) -> float:
        return DEFAULT_MIN_AGREEMENT[self.precision] if self.min_agreement is None else self.min_agreement


@dataclass(frozen=True)
class ProcessorOptions:
    frame_rule: str
    feature_norm: str
    channel: int | str


def processor_options(config: ExportConfig, sidecar: RecordedTraining | None) -> ProcessorOptions:
    """The bundle's frame rule, feature norm and channel: given options, else the sidecar's, else defaults.

    A --feature-norm that contradicts the sidecar is refused: centroids fitted on normalised
    features are meaningless against raw ones, and the other way round.
    """
    # What the sidecar records (None: it does not say, so audiotok's default).
    norm, rule, trained_channel = ((sidecar.feature_norm, sidecar.frame_rule, sidecar.channel)
                                   if sidecar is not None else (None, None, None))
    trained_norm = "none" if norm is None else norm
    if config.feature_norm is not None:
        check_choice(config.feature_norm, FEATURE_NORMS, "--feature-norm")
        if sidecar is not None and config.feature_norm != trained_norm:
            raise SettingsError(f"--feature-norm {config.feature_norm} contradicts --centroids {config.centroids}: "
                                f"their sidecar says they were fitted with feature norm {trained_norm!r}; "
                                f"drop --feature-norm or pass --feature-norm {trained_norm}")
    feature_norm = config.feature_norm or check_choice(trained_norm, FEATURE_NORMS, "the sidecar's feature_norm")
    frame_rule = "pad" if config.pad_last_frame else check_choice(
        "floor" if rule is None else rule, FRAME_RULES, "the sidecar's frame_rule")
    if trained_channel is None:
        trained_channel = CHANNEL_MEAN
    channel = parse_channel(config.channel if config.channel is not None else trained_channel,
                            option="--channel" if config.channel is not None else "the sidecar's channel")
    return ProcessorOptions(frame_rule, feature_norm, channel)


def _check_pairing(encoder: Encoder, centroids: Centroids, sidecar: RecordedTraining | None) -> None:
    spec = encoder.spec
    if sidecar is not None:
        trained = sidecar.encoder
        if sidecar.layer != spec.layer:
            raise CentroidsError(f"--centroids {centroids.source} were fitted on layer {sidecar.layer} "
                                 f"of {sidecar.encoder_name}, not layer {spec.layer}: pass --layer {sidecar.layer}")
        same = sidecar.encoder_name == spec.name or (
            trained.get("config_sha256") and trained.get("config_sha256") == spec.config_sha256)
        if not same:
            raise CentroidsError(f"--centroids {centroids.source} were fitted on {sidecar.encoder_name}, "
                                 f"not on --model {spec.name}")
    if centroids.dim != spec.dim:
        raise CentroidsError(f"--centroids {centroids.source} have dimension {centroids.dim}, but layer "
                             f"{spec.layer} of {spec.name} gives {spec.dim}-dimensional features")


def _fitted_on(centroids: Centroids, sidecar: RecordedTraining) -> str:
    return (f"--centroids {centroids.source} were fitted on layer {sidecar.layer} of {sidecar.encoder_name} "
            f"(as {sidecar_path(centroids.source).name} beside them records)")


def _check_sidecar_shape(centroids: Centroids, sidecar: RecordedTraining | None) -> None:
    """A sidecar describing other centroids (copied beside the wrong file) must not vouch for these."""
    if sidecar is None:
        return
    recorded = (centroids.k if sidecar.k is None else sidecar.k, centroids.dim if sidecar.dim is None else sidecar.dim)
    if recorded != (centroids.k, centroids.dim):
        raise CentroidsError(f"--centroids {centroids.source} are {centroids.k} x {centroids.dim}, but "
                             f"{sidecar_path(centroids.source).name} beside them describes {recorded[0]} x "
                             f"{recorded[1]} centroids: it belongs to another file")


def _check_sidecar_hash(centroids: Centroids, sidecar: RecordedTraining | None) -> None:
    """A sidecar that names other centroids' hash does not describe these (a train killed between its
    renames, centroids copied over): its processor options would be the wrong ones."""
    if sidecar is None or sidecar.centroids_sha256 is None or sidecar.centroids_sha256 == centroids.sha256:
        return
    raise CentroidsError(f"--centroids {centroids.source} do not match {sidecar_path(centroids.source).name} beside "
                         f"them (it records centroids sha256 {sidecar.centroids_sha256[:12]}..., these are "
                         f"{centroids.sha256[:12]}...): they are not one training run's pair; train again, or move "
                         f"the sidecar away and pass --layer")


def _load_encoder(config: ExportConfig, layer: int | None, centroids: Centroids,
                  sidecar: RecordedTraining | None) -> Encoder:
    """The encoder at ``layer``; when that layer came from the sidecar, a refusal says so (not "--layer")."""
    from_sidecar = config.layer is None and sidecar is not None
    if from_sidecar and (config.model == "logmel") != (sidecar.encoder_name == "logmel"):
        raise CentroidsError(f"{_fitted_on(centroids, sidecar)}, not with --model {config.model}: export them "
                             f"with the encoder they were fitted on")
    try:
        return load_encoder(config.model, layer, config.normalize)
    except SettingsError as exc:
        if not from_sidecar:
            raise
        raise SettingsError(f"{_fitted_on(centroids, sidecar)}, which --model {config.model} cannot give "
                            f"({exc})") from None


def audio_clips(paths: list[str], total_seconds: float, clip_seconds: float) -> tuple[list[np.ndarray], str]:
    """Up to ``clip_seconds`` from the start of each file, until ``total_seconds``; and a description."""
    clips, total = [], 0.0
    for item in list_corpus(paths):
        clip = np.concatenate(list(file_blocks(item.path)))[: int(clip_seconds * SAMPLE_RATE)]
        if len(clip) >= RECEPTIVE_FIELD_SAMPLES:
            clips.append(clip)
            total += len(clip) / SAMPLE_RATE
        if total >= total_seconds:
            break
    return clips, f"{len(clips)} files, {total:.1f} s"


def _parity_clips(config: ExportConfig, sidecar: RecordedTraining | None) -> tuple[list[np.ndarray], str]:
    # The DATA the centroids were trained on (folders, files, @manifests) that is still there.
    paths = config.audio or [p for p in (sidecar.data if sidecar is not None else ())
                             if Path(p).exists() or (p.startswith("@") and Path(p[1:]).exists())]
    if paths:
        clips, audio = audio_clips(paths, PARITY_SECONDS, PARITY_CLIP_SECONDS)
        if clips:
            return clips, audio
    n = int(PARITY_SECONDS / PARITY_CLIP_SECONDS)
    return [pseudo_speech(SYNTHETIC_CLIP_SECONDS, seed=i) for i in range(n)], f"synthetic, {PARITY_SECONDS:.0f} s"


def _calibration_clips(config: ExportConfig, parity: list[np.ndarray], audio: str) -> tuple[list[np.ndarray], str]:
    if not config.calibration:
        return parity, audio
    clips, described = audio_clips(config.calibration, CALIBRATION_SECONDS, PARITY_CLIP_SECONDS)
    if not clips:
        raise SettingsError(f"--calibration {' '.join(config.calibration)}: no audio of at least 25 ms found")
    return clips, described


def _provenance(encoder: Encoder, centroids: Centroids, sidecar: RecordedTraining | None) -> dict:
    return {
        "encoder": asdict(encoder.spec),
        "centroids": centroids.provenance(),
        "training": asdict(sidecar.training) if sidecar is not None else None,
        "versions": {"audiotok": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
    }


def _check_config(config: ExportConfig) -> None:
    if config.layout not in LAYOUT_CHOICES:
        raise SettingsError(f"--layout must be one of {', '.join(LAYOUT_CHOICES)}, got {config.layout!r}")
    if config.precision not in PRECISIONS:
        raise SettingsError(f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    check_min_agreement(config.min_agreement)


def _variant(config: ExportConfig, fp32: Path, folder: Path, clips: list[np.ndarray], reference: list[Reference],
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


def _export_and_release(encoder: Encoder, centroids: Centroids, options: ProcessorOptions, path: Path, *,
                        stream: bool) -> StreamEntry | None:
    """Export the graph (with the stream entry point when ``stream`` and the encoder splits: stream_graph.py),
    then let the torch weights go: later stages hold the ONNX copy only, which keeps an export's peak near
    two copies of the weights at any size. Returns the stream entry exported, if any."""
    graph = UnitGraph(prepare_for_export(encoder), centroids.array, options.feature_norm, with_features=True).eval()
    split = stream_split(encoder) if stream else None
    if split is not None:
        graph = StreamableGraph(graph, split).eval()
    entry = graph.entry if split is not None else None
    export_graph(graph, path)
    del graph, split
    for parameter in [*encoder.parameters(), *encoder.buffers()]:
        parameter.data = torch.empty(0, dtype=parameter.dtype)  # the caller's reference no longer holds weights
    gc.collect()
    return entry


def export_bundle(config: ExportConfig, progress: Progress = lambda _: None) -> tuple[Manifest, Agreement]:
    """Export, check and write one bundle; raises :class:`AgreementError` (writing nothing) below the bar."""
    _check_config(config)
    centroids = load_centroids(config.centroids)
    # Only audiotok's own .npy centroids have a sidecar; an imported vocabulary needs --layer.
    sidecar = read_sidecar(config.centroids) if centroids.format == "npy" else None
    _check_sidecar_shape(centroids, sidecar)
    _check_sidecar_hash(centroids, sidecar)
    layer = config.layer if config.layer is not None else (sidecar.layer if sidecar is not None else None)
    if layer is None and sidecar is None and config.model != "logmel":
        log.warning("--centroids %s do not record their layer and no --layer was given: using the encoder's "
                    "default; pass --layer to be sure", config.centroids)
    if config.model == "logmel" and layer == 0:
        layer = None
    options = processor_options(config, sidecar)
    progress("loading the encoder")
    encoder = _load_encoder(config, layer, centroids, sidecar)
    _check_pairing(encoder, centroids, sidecar)
    spec = encoder.spec
    clips, audio = _parity_clips(config, sidecar)
    calibration = _calibration_clips(config, clips, audio) if config.precision == "int8" else ([], "")
    progress("torch reference units")
    reference = torch_reference(encoder, centroids.array, clips, options.feature_norm)
    provenance = _provenance(encoder, centroids, sidecar)
    with tempfile.TemporaryDirectory(prefix="audiotok-export-") as tmp:
        folder = Path(tmp)
        progress("exporting to ONNX")
        # The stream entry point in fp32 bundles only: fp16 and int8 stream by recomputing windows.
        entry = _export_and_release(encoder, centroids, options, folder / "graph.onnx",
                                    stream=config.precision == "fp32")
        progress("optimizing the graph")
        fused = optimize_graph(folder / "graph.onnx", folder / "fp32.onnx", transformer=spec.encoder_type != "logmel")
        variant, details = _variant(config, folder / "fp32.onnx", folder, clips, reference, calibration, progress)
        manifest = Manifest(
            encoder=spec.name, encoder_type=spec.encoder_type, layer=spec.layer, k=centroids.k, dim=spec.dim,
            normalization=spec.normalization, precision=config.precision, opset=OPSET,
            centroids_sha256=centroids.sha256, audiotok_version=__version__, licence=spec.licence,
            frame_rule=options.frame_rule, feature_norm=options.feature_norm, channel=options.channel,
            provenance={**provenance, "optimizations": {"fused": fused}, **details},
            stream=entry.to_dict() if entry is not None else None,
        )
        staged = folder / "bundle.onnx"
        attach_manifest(variant, staged, manifest, keep_features=True, layout=config.layout)
        progress("measuring agreement")
        tokenizer = Tokenizer(staged, providers=config.providers)

        def units_and_features(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            batch = {INPUT_NAME: np.ascontiguousarray(clip, np.float32)[None]}
            units, features = tokenizer.session.run([OUTPUT_NAME, FEATURES_NAME], batch)
            return units[0], features[0]

        agreement = measure_fidelity(units_and_features, clips, reference, centroids.array, audio,
                                     options.feature_norm)
        del tokenizer
        required = config.required_agreement
        if not agreement.meets(required):
            raise AgreementError(
                f"the {config.precision} bundle's units equal torch's on {agreement.fraction:.2%} of "
                f"{agreement.frames} frames, below --min-agreement {required:.2%}; nothing was written: "
                f"{INSTEAD[config.precision]}")
        manifest = Manifest(**{**asdict(manifest), "agreement": {**agreement.as_dict("torch fp32"),
                                                                 "min_agreement": required}})
        with atomic_path(config.output) as target:
            attach_manifest(variant, target, manifest, keep_features=config.keep_features, layout=config.layout)
    return manifest, agreement
