"""The exported computation: encoder cut at its layer, then the nearest centroid, as one module.

Nearest centroid is ``argmin_k ||h - c_k||^2 = argmin_k (||c_k||^2 - 2 h.c_k)``: ``||h||^2`` is the
same for every k, so it is dropped; what remains is one MatMul and an Add against constants. The
distances stay float32 in every precision variant so that near-ties resolve as in the fp32 path.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audiotok.models import Encoder


class NearestCentroid(nn.Module):
    """``[batch, frames, dim]`` features -> ``[batch, frames]`` int64 index of the nearest centroid."""

    def __init__(self, centroids: np.ndarray) -> None:
        super().__init__()
        c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
        self.register_buffer("minus_two_ct", (-2.0 * c).T.contiguous())  # [dim, k]
        self.register_buffer("c_sq", (c * c).sum(dim=1))  # [k]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        distances = self.c_sq + features.float() @ self.minus_two_ct
        return distances.argmin(dim=-1)


class UnitGraph(nn.Module):
    """Waveform ``[batch, samples]`` at 16 kHz -> units ``[batch, frames]``."""

    def __init__(self, encoder: Encoder, centroids: np.ndarray) -> None:
        super().__init__()
        self.encoder = encoder
        self.nearest = NearestCentroid(centroids)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.nearest(self.encoder(waveform))
