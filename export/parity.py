"""Fidelity: do a bundle's units and hidden states equal the torch path's on real frames?

The reference is always the unmodified torch encoder in float32 (what training used), computed
once per clip on the whole clip (as the runtime runs inputs up to its one-pass limit); every
candidate graph (fp32, fp16, each int8 trial) is compared against the same units. Besides the
fraction of equal units, the final check reports two figures that say how safe that fraction is:

* ``max_hidden_relative_error``: the largest ``||h_bundle - h_torch|| / ||h_torch||`` over the
  frames checked, for the layer's hidden states ``h`` (fp32 graphs differ from torch only by float
  summation order: around 1e-6);
* ``min_margin``: the smallest gap between a frame's nearest and second-nearest centroid
  (Euclidean distance, torch features), and ``min_relative_margin``, that gap over the nearest
  distance. A unit can flip only where the hidden-state error is comparable to this margin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from audiotok.models import Encoder
from audiotok.runtime.errors import SettingsError
from audiotok.runtime.bundle.session import INPUT_NAME, OUTPUT_NAME, resolve_providers, session_options

from .graph import L2_EPS, NearestCentroid

UnitsFn = Callable[[np.ndarray], np.ndarray]  # 16 kHz clip -> units
UnitsAndFeaturesFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # clip -> (units, [frames, dim])


@dataclass(frozen=True)
class Reference:
    """The torch float32 path on one clip: the layer's hidden states and their units."""

    features: np.ndarray  # [frames, dim] float32
    units: np.ndarray  # [frames] int64


@dataclass(frozen=True)
class Agreement:
    frames: int
    matching: int
    audio: str  # what the audio was, for the manifest
    max_hidden_relative_error: float | None = None
    min_margin: float | None = None
    min_relative_margin: float | None = None

    @property
    def fraction(self) -> float:
        return self.matching / self.frames if self.frames else 1.0

    def meets(self, bar: float | None) -> bool:
        """Whether the agreement reaches ``--min-agreement`` (None: no bar); export and verify both ask this."""
        return bar is None or self.fraction >= bar

    def as_dict(self, reference: str) -> dict[str, object]:
        figures = {"reference": reference, "frames": self.frames, "matching": self.matching,
                   "agreement": round(self.fraction, 6), "audio": self.audio}
        for name in ("max_hidden_relative_error", "min_margin", "min_relative_margin"):
            value = getattr(self, name)
            if value is not None:
                figures[name] = float(f"{value:.4g}")
        return figures


@torch.no_grad()
def torch_reference(encoder: Encoder, centroids: np.ndarray, clips: list[np.ndarray],
                    feature_norm: str = "none") -> list[Reference]:
    """The torch float32 hidden states and units of each clip, one pass per clip."""
    nearest = NearestCentroid(centroids, feature_norm).eval()
    out = []
    for clip in clips:
        features = encoder(torch.from_numpy(np.ascontiguousarray(clip, np.float32))[None])[0].float()
        out.append(Reference(features.numpy(), nearest(features).numpy()))
    return out


def searched(features: np.ndarray, feature_norm: str) -> np.ndarray:
    """The vectors the nearest-centroid search compares: the features, L2-normalised under ``l2``."""
    if feature_norm != "l2":
        return features
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), L2_EPS)


def margins(features: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: second-nearest minus nearest centroid distance, and that gap over the nearest distance."""
    h, c = features.astype(np.float64), centroids.astype(np.float64)
    if len(c) < 2:  # one unit: nothing can flip
        return np.full(len(h), np.inf), np.full(len(h), np.inf)
    squared = (h * h).sum(1)[:, None] - 2 * h @ c.T + (c * c).sum(1)[None]
    two = np.sqrt(np.maximum(np.partition(squared, 1, axis=1)[:, :2], 0.0))
    gap = two[:, 1] - two[:, 0]
    return gap, gap / np.maximum(two[:, 0], 1e-12)


def relative_errors(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per frame ``||got - expected|| / ||expected||`` (float64)."""
    diff = np.linalg.norm(got.astype(np.float64) - expected, axis=1)
    return diff / np.maximum(np.linalg.norm(expected.astype(np.float64), axis=1), 1e-12)


def check_min_agreement(value: float | None) -> None:
    """--min-agreement is a fraction of frames; export and verify refuse anything else the same way."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise SettingsError(f"--min-agreement is a fraction of frames in [0, 1], got {value}")


def equal_units(got: np.ndarray, expected: np.ndarray) -> int:
    """How many frames hold the same unit in both: the count every agreement figure is made of."""
    return int((np.asarray(got) == np.asarray(expected)).sum())


def measure_agreement(units_fn: UnitsFn, clips: list[np.ndarray], reference: list[Reference],
                      audio: str) -> Agreement:
    """Frames where ``units_fn`` gives the reference unit, over all clips."""
    frames = matching = 0
    for clip, expected in zip(clips, reference):
        got = units_fn(clip)
        if got.shape != expected.units.shape:
            raise RuntimeError(f"bundle gave {got.shape} units where torch gave {expected.units.shape}")
        frames += len(expected.units)
        matching += equal_units(got, expected.units)
    return Agreement(frames, matching, audio)


def measure_fidelity(fn: UnitsAndFeaturesFn, clips: list[np.ndarray], reference: list[Reference],
                     centroids: np.ndarray, audio: str, feature_norm: str = "none") -> Agreement:
    """Unit agreement, the largest hidden-state error and the smallest centroid margin over all clips."""
    frames = matching = 0
    error, gap, relative_gap = 0.0, np.inf, np.inf
    for clip, expected in zip(clips, reference):
        units, features = fn(clip)
        if units.shape != expected.units.shape or features.shape != expected.features.shape:
            raise RuntimeError(f"bundle gave {features.shape} features where torch gave {expected.features.shape}")
        frames += len(units)
        matching += equal_units(units, expected.units)
        if len(units):
            error = max(error, float(relative_errors(features, expected.features).max()))
            g, r = margins(searched(expected.features, feature_norm), centroids)
            gap, relative_gap = min(gap, float(g.min())), min(relative_gap, float(r.min()))
    if not frames:
        return Agreement(0, 0, audio)
    finite = np.isfinite(gap)
    return Agreement(frames, matching, audio, error, gap if finite else None, relative_gap if finite else None)


def graph_units_fn(path: Path, providers: list[str] | str | None = None) -> UnitsFn:
    """Units from an ONNX graph that has no manifest yet (a candidate during export)."""
    session = ort.InferenceSession(str(path), session_options(), providers=resolve_providers(providers))
    return lambda clip: session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(clip, np.float32)[None]})[0][0]
