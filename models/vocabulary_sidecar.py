"""The centroids' sidecar: a JSON file beside ``centroids.npy`` saying what they were fitted on.

Centroids used with another layer or encoder give units that look fine and mean nothing. The
sidecar lets export check the pairing and carries the training facts into the bundle's manifest.
train writes it and export reads it, so it lives here, beside the encoder spec it records, and
neither side imports the other (nor does export need scikit-learn to read a JSON file).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from audiotok import __version__
from audiotok.runtime.bundle.centroids import centroids_sha256
from audiotok.runtime.errors import AudiotokError
from audiotok.runtime.formats.file_set import FileSet
from audiotok.runtime.bundle.json_rules import (Integer, JsonObject, JsonRuleError, Nullable, Number, Rule, Text, TextList,
                                         load_bounded_json)
from audiotok.runtime.bundle.manifest import FIELD_RULES as MANIFEST_RULES
from audiotok.runtime.bundle.manifest import MAX_DIM, MAX_K, MAX_LAYER

from .base import EncoderSpec

# Version of the sidecar's layout; sidecars written before it was recorded are version 1.
SIDECAR_FORMAT = 1


def sidecar_path(centroids: str | Path) -> Path:
    return Path(centroids).with_suffix(".json")


def _versions() -> dict[str, str]:
    """The library versions training ran with (imported here, at write time, only by train). Those of
    scikit-learn and transformers come from their installed metadata: a logmel train never imports
    transformers, and importing it only for its version cost about 2 CPU-seconds."""
    import torch

    versions = {"audiotok": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "torch": torch.__version__}
    for name in ("scikit-learn", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _absolute(data: str) -> str:
    """A DATA argument made absolute, keeping a manifest's ``@``."""
    if data.startswith("@") and not Path(data).exists():
        return "@" + str(Path(data[1:]).resolve())
    return str(Path(data).resolve())


@dataclass(frozen=True)
class TrainingRecord:
    encoder: dict[str, Any]  # EncoderSpec as a dict
    layer: int
    k: int
    dim: int
    frames: int
    hours: float
    files: int
    data: list[str]  # the DATA arguments, absolute
    percent: float
    seed: int
    kmeans: dict[str, Any]  # KMeansConfig
    inertia: float
    mean_squared_distance: float
    clusters_used: int
    perplexity: float
    versions: dict[str, str]
    fit: str = "in-memory"  # or "out-of-core" (partial_fit over the feature cache's shards), or "faiss"
    backend: str = "sklearn"  # or "faiss"
    # Processor options the features were made with; export carries frame_rule, feature_norm and
    # channel into the bundle so that it tokenizes the way the vocabulary was trained.
    channel: int | str = "mean"
    trim_silence_db: float | None = None
    frame_rule: str = "floor"
    feature_norm: str = "none"
    max_frames_file: int | None = None
    max_frames_total: int | None = None
    faiss_index: str | None = None  # the IndexFlatL2 written beside the centroids, if any
    format: int = SIDECAR_FORMAT
    # sha256 of the centroids as little-endian float32 (the manifest's centroids_sha256): export
    # refuses centroids this sidecar does not describe (a run killed between its renames, a copy).
    centroids_sha256: str | None = None

    @classmethod
    def create(cls, spec: EncoderSpec, config: Any, stats: Any, *, frames: int,
               hours: float, files: list[str], data: list[str], percent: float, fit: str = "in-memory",
               **options: Any) -> TrainingRecord:
        """``config`` is train's KMeansConfig or FaissConfig and ``stats`` its UnitStats (dataclasses)."""
        return cls(encoder=asdict(spec), layer=spec.layer, k=config.k, dim=spec.dim, frames=frames,
                   hours=round(hours, 6), files=len(files), data=[_absolute(d) for d in data],
                   percent=percent, seed=config.seed, kmeans=asdict(config), versions=_versions(), fit=fit,
                   **asdict(stats), **options)


def stage_centroids(files: FileSet, path: str | Path, centroids: np.ndarray, record: TrainingRecord) -> None:
    """Stage ``centroids.npy``, then its sidecar naming their hash, in ``files`` (renamed in that order).

    The sidecar goes last: a run killed between the renames leaves new centroids beside a sidecar
    whose hash does not match them, which export refuses; never a pair that looks right and is not.
    """
    array = np.ascontiguousarray(centroids, np.float32)
    with open(files.stage(path), "wb") as f:
        np.save(f, array)
    record = TrainingRecord(**{**asdict(record), "centroids_sha256": centroids_sha256(array)})
    files.stage(sidecar_path(path)).write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")


SIDECAR_HEAD = b'{\n  "encoder": {'  # how every sidecar json.dumps(asdict(record), indent=2) writes starts


def is_sidecar_head(content: bytes) -> bool:
    """Whether a file's first bytes start like a sidecar audiotok writes (a staged one may be cut short)."""
    return content.startswith(SIDECAR_HEAD)


def is_sidecar(content: bytes) -> bool:
    """Whether ``content`` is a sidecar :func:`stage_centroids` wrote (so train may replace it)."""
    data = json.loads(content.decode("utf-8"))
    return isinstance(data, dict) and isinstance(data.get("encoder"), dict) and isinstance(
        data.get("versions"), dict) and all(type(data.get(key)) is int for key in ("layer", "k", "dim", "frames"))


class SidecarError(AudiotokError):
    """A centroids sidecar that exists but cannot be trusted to say what the centroids were fitted on."""


MAX_SIDECAR_BYTES = 16 << 20  # the DATA list dominates; a real sidecar is a few KB
# What export reads from a sidecar, and what each value must be. encoder and layer are required:
# without them the pairing check cannot work. The rest are copied into the bundle's provenance.
SIDECAR_RULES: dict[str, Rule] = {
    "encoder": JsonObject(),
    "layer": Integer(0, MAX_LAYER),
    "k": Integer(2, MAX_K),
    "dim": Integer(1, MAX_DIM),
    "frames": Integer(0, 1 << 62),
    "hours": Number(0.0, 1e9),
    "files": Integer(0, 1 << 62),
    "data": TextList(),
    "percent": Number(0.0, 100.0),
    "seed": Integer(-(1 << 63), 1 << 64),
    "kmeans": JsonObject(),
    "inertia": Number(0.0, 1e300),
    "mean_squared_distance": Number(0.0, 1e300),
    "clusters_used": Integer(0, MAX_K),
    "perplexity": Number(0.0, 1e300),
    "versions": JsonObject(),
    "fit": Text(max_length=64),
    "format": Integer(1, SIDECAR_FORMAT),
    # Processor options: the same rules as in a bundle's manifest, which export copies them into.
    "frame_rule": MANIFEST_RULES["frame_rule"],
    "feature_norm": MANIFEST_RULES["feature_norm"],
    "channel": MANIFEST_RULES["channel"],
    "trim_silence_db": Nullable(Number(0.0, 1e3)),
    # How the run went: copied into the bundle's provenance, so bounded like everything else.
    "backend": Text(max_length=64),
    "max_frames_file": Nullable(Integer(1, 1 << 62)),
    "max_frames_total": Nullable(Integer(1, 1 << 62)),
    "faiss_index": Text(optional=True),
    "centroids_sha256": Text(hex_length=64, optional=True),
}
ENCODER_RULES: dict[str, Rule] = {"name": Text(), "encoder_type": Text(max_length=64),
                                  "config_sha256": Text(optional=True)}
REQUIRED = ("encoder", "layer")


@dataclass(frozen=True)
class TrainingFacts:
    """The training facts a sidecar records, copied as they are into a bundle's provenance ("training").

    Each is None when the sidecar does not record it; every recorded one has passed SIDECAR_RULES.
    """

    frames: int | None = None
    hours: float | None = None
    files: int | None = None
    percent: float | None = None
    seed: int | None = None
    inertia: float | None = None
    clusters_used: int | None = None
    perplexity: float | None = None
    kmeans: dict[str, Any] | None = None  # KMeansConfig or FaissConfig, as a JSON object
    backend: str | None = None
    trim_silence_db: float | None = None
    max_frames_file: int | None = None
    max_frames_total: int | None = None


@dataclass(frozen=True)
class RecordedTraining:
    """What a checked sidecar says the centroids were fitted on and how (see :func:`read_sidecar`).

    ``encoder`` and ``layer`` are always there; every other fact is optional, and None (or an empty
    ``data``) when the sidecar does not record it, so that a caller can tell "recorded" from "default".
    """

    encoder: dict[str, Any]  # EncoderSpec as a JSON object; "name" is a string, always there
    layer: int
    k: int | None = None
    dim: int | None = None
    data: tuple[str, ...] = ()  # the DATA arguments training read (folders, files, @file lists)
    # Processor options the features were made with (checked by the manifest's rules), None when not recorded.
    frame_rule: str | None = None
    feature_norm: str | None = None
    channel: int | str | None = None
    training: TrainingFacts = TrainingFacts()
    mean_squared_distance: float | None = None
    versions: dict[str, Any] | None = None
    fit: str | None = None
    format: int = 1  # sidecars written before the format was recorded are format 1
    centroids_sha256: str | None = None  # None: an older sidecar that does not record it

    @property
    def encoder_name(self) -> str:
        return self.encoder["name"]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordedTraining:
        """The record of ``data``, a sidecar's JSON object that :func:`read_sidecar` has checked."""
        training = TrainingFacts(**{item.name: data.get(item.name) for item in fields(TrainingFacts)})
        return cls(encoder=data["encoder"], layer=data["layer"], k=data.get("k"), dim=data.get("dim"),
                   data=tuple(data.get("data", ())), frame_rule=data.get("frame_rule"),
                   feature_norm=data.get("feature_norm"), channel=data.get("channel"), training=training,
                   mean_squared_distance=data.get("mean_squared_distance"), versions=data.get("versions"),
                   fit=data.get("fit"), format=data.get("format", 1),
                   centroids_sha256=data.get("centroids_sha256"))


def read_sidecar(centroids: str | Path) -> RecordedTraining | None:
    """The sidecar of ``centroids``, checked, or None when there is none.

    A sidecar that is there but unreadable is an error, not "no sidecar": it is what keeps
    centroids from being exported with the wrong encoder or layer.
    """
    path = sidecar_path(centroids)
    if not path.exists():
        return None
    if not path.is_file():
        raise SidecarError(f"{path}: the centroids' sidecar is not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
        data = load_bounded_json(raw, max_bytes=MAX_SIDECAR_BYTES)
        if not isinstance(data, dict):
            raise JsonRuleError(f"it holds a JSON {type(data).__name__}, not an object")
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise JsonRuleError(f"it lacks {', '.join(missing)}")
        for key, rule in SIDECAR_RULES.items():
            if key in data:
                rule.check(key, data[key])
        for key, rule in ENCODER_RULES.items():
            if key in data["encoder"] or key == "name":
                rule.check(f"encoder.{key}", data["encoder"].get(key))
    except OSError as exc:
        raise SidecarError(f"{path}: the centroids' sidecar cannot be read ({exc.strerror or exc})") from None
    except JsonRuleError as exc:
        raise SidecarError(f"{path}: not a valid centroids sidecar: {exc}; fix it, or move it aside to export "
                           f"the centroids without it (then pass --layer)") from None
    return RecordedTraining.from_json(data)
