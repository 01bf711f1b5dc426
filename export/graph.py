"""The exported computation: encoder cut at its layer, then the nearest centroid, as one module.

Nearest centroid is ``argmin_k ||h - c_k||^2 = argmin_k (||c_k||^2 - 2 h.c_k)``: ``||h||^2`` is the
same for every k, so it is dropped; what remains is one MatMul and an Add against constants. The
distances stay float32 in every precision variant so that near-ties resolve as in the fp32 path.

With ``feature_norm="l2"`` (vocabularies clustered on L2-normalised features, audioTokenizer's
``l2_norm``) each feature is first divided by its length, as ``torch.nn.functional.normalize``
does (length floored at 1e-12), inside the graph, so the runtime needs no extra step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audiotok.models import Encoder

L2_EPS = 1e-12  # torch.nn.functional.normalize's floor on the length


class NearestCentroid(nn.Module):
    """``[batch, frames, dim]`` features -> ``[batch, frames]`` int64 index of the nearest centroid."""

    def __init__(self, centroids: np.ndarray, feature_norm: str = "none") -> None:
        super().__init__()
        if feature_norm not in ("none", "l2"):
            raise ValueError(f"feature_norm must be 'none' or 'l2', got {feature_norm!r}")
        self.l2 = feature_norm == "l2"
        c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
        self.register_buffer("minus_two_ct", (-2.0 * c).T.contiguous())  # [dim, k]
        self.register_buffer("c_sq", (c * c).sum(dim=1))  # [k]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.float()
        if self.l2:
            features = features / features.norm(dim=-1, keepdim=True).clamp_min(L2_EPS)
        distances = self.c_sq + features @ self.minus_two_ct
        return distances.argmin(dim=-1)


class UnitGraph(nn.Module):
    """Waveform ``[batch, samples]`` at 16 kHz -> units ``[batch, frames]``.

    With ``with_features`` it also returns the layer's hidden states ``[batch, frames, dim]``: the
    export's parity step measures the graph's hidden-state error through this second output (the
    same arithmetic; the bundle drops the output unless a debug export asks to keep it).
    """

    def __init__(self, encoder: Encoder, centroids: np.ndarray, feature_norm: str = "none", *,
                 with_features: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.nearest = NearestCentroid(centroids, feature_norm)
        self.with_features = with_features

    def forward(self, waveform: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(waveform)
        units = self.nearest(features)
        return (units, features.float()) if self.with_features else units
