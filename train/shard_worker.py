"""Extracting one shard of features inside an engine's worker (a local process or a Ray actor).

Each worker loads the encoder once. Frame sampling (``--percent``) is seeded per file by
``(seed, file index)``, so the rows kept do not depend on which worker extracted a shard or in which
order: a resumed, parallel or distributed extraction caches exactly the same features.
"""

from __future__ import annotations

import numpy as np

from audiotok.models import Encoder, load_encoder
from audiotok.runtime.audio import file_blocks
from audiotok.runtime.errors import AudiotokError

from .feature_cache import ShardResult, ShardTask, cache_dtype
from .features import FeatureExtractor


def keep_mask(frames: int, percent: float, seed: int, file_index: int) -> np.ndarray | None:
    """Which frames of one file ``--percent`` keeps (None: all of them)."""
    if percent >= 100:
        return None
    return np.random.default_rng([seed, file_index]).random(frames) < percent / 100


class ShardWorker:
    def __init__(self, model: str = "logmel", layer: int | None = None, normalize: str = "auto", *,
                 percent: float = 100.0, seed: int = 0, threads: int | None = None,
                 encoder: Encoder | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.extractor = FeatureExtractor(encoder if encoder is not None else load_encoder(model, layer, normalize))
        self.percent = percent
        self.seed = seed

    def __call__(self, task: ShardTask) -> ShardResult:
        dim = self.extractor.encoder.spec.dim
        pieces, files, errors = [], [], []
        for planned in task.files:
            try:
                feats = self.extractor.features(file_blocks(planned.path))
            except AudiotokError as exc:
                errors.append({"path": planned.path, "error": str(exc)})
                continue
            except Exception as exc:  # one undecodable file must not lose a whole shard
                errors.append({"path": planned.path, "error": f"{planned.path}: {type(exc).__name__}: {exc}"})
                continue
            if planned.max_frames is not None:
                feats = feats[:planned.max_frames]
            frames = len(feats)
            mask = keep_mask(frames, self.percent, self.seed, planned.index)
            if mask is not None:
                feats = feats[mask]
            pieces.append(feats)
            files.append({"path": planned.path, "frames": frames, "rows": len(feats)})
        features = cache_dtype(np.concatenate(pieces)) if pieces else np.zeros((0, dim), np.float16)
        return ShardResult(task.index, features, files, errors)
