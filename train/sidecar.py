"""The centroids' sidecar: a JSON file beside ``centroids.npy`` saying what they were fitted on.

Centroids used with another layer or encoder give units that look fine and mean nothing. The
sidecar lets export check the pairing and carries the training facts into the bundle's manifest.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiotok import __version__
from audiotok.models import EncoderSpec
from audiotok.runtime.output import atomic_path

from .kmeans import KMeansConfig, UnitStats


def sidecar_path(centroids: str | Path) -> Path:
    return Path(centroids).with_suffix(".json")


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    versions = {"audiotok": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "torch": torch.__version__, "scikit-learn": sklearn.__version__}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:
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
    fit: str = "in-memory"  # or "out-of-core" (partial_fit over the feature cache's shards)

    @classmethod
    def create(cls, spec: EncoderSpec, config: KMeansConfig, stats: UnitStats, *, frames: int, hours: float,
               files: list[str], data: list[str], percent: float, fit: str = "in-memory") -> TrainingRecord:
        return cls(encoder=asdict(spec), layer=spec.layer, k=config.k, dim=spec.dim, frames=frames,
                   hours=round(hours, 6), files=len(files), data=[_absolute(d) for d in data],
                   percent=percent, seed=config.seed, kmeans=asdict(config), versions=_versions(), fit=fit,
                   **asdict(stats))


def write_centroids(path: str | Path, centroids: np.ndarray, record: TrainingRecord) -> None:
    """Write ``centroids.npy`` and its sidecar, each atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, centroids.astype(np.float32))
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")


def read_sidecar(centroids: str | Path) -> dict[str, Any] | None:
    """The sidecar of ``centroids`` as a dict, or None when there is none (or it is unreadable)."""
    path = sidecar_path(centroids)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
