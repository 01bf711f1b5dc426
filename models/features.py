"""Frame features from a frozen encoder, on the same windows the runtime tokenizes with.

Features are computed through :class:`audiotok.runtime.windowing.Windower` with the runtime's
offline policy, so the frames k-means is fitted on are computed exactly as the frames the bundle
will later assign units to (one pass up to 30 s, context windows beyond).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from audiotok.runtime.constants import RECEPTIVE_FIELD_SAMPLES
from audiotok.runtime.windowing import OFFLINE_POLICY, Windower, WindowPolicy

from .base import Encoder


class FeatureExtractor:
    """Runs an encoder on 16 kHz windows under ``torch.no_grad``; one feature row per frame."""

    def __init__(self, encoder: Encoder, policy: WindowPolicy = OFFLINE_POLICY) -> None:
        self.encoder = encoder.eval()
        self.policy = policy

    @torch.no_grad()
    def window_features(self, samples: np.ndarray) -> np.ndarray:
        if len(samples) < RECEPTIVE_FIELD_SAMPLES:
            return np.zeros((0, self.encoder.spec.dim), np.float32)
        features = self.encoder(torch.from_numpy(np.ascontiguousarray(samples, np.float32))[None])
        return features[0].float().numpy()

    def features(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """``[frames, dim]`` float32 features of a stream of 16 kHz blocks."""
        windower = Windower(self.policy, self.window_features)
        pieces = [f for block in blocks for _, f in windower.push(block)]
        pieces += [f for _, f in windower.finish()]
        if not pieces:
            return np.zeros((0, self.encoder.spec.dim), np.float32)
        return np.concatenate(pieces).astype(np.float32, copy=False)
