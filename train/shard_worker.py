"""Extracting one shard of features inside an engine's worker (a local process or a Ray actor).

Each worker loads the encoder once. Frame sampling (``--percent``) is seeded per file by
``(seed, file index)``, so the rows kept do not depend on which worker extracted a shard or in which
order: a resumed, parallel or distributed extraction caches exactly the same features.
"""

from __future__ import annotations

import numpy as np

from audiotok.models import Encoder, load_encoder
from audiotok.models.features import FeatureExtractor
from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.errors import AudiotokError
from audiotok.runtime.audio.preprocess import CHANNEL_MEAN, Preprocess, prepared_blocks

from .feature_cache import ShardResult, ShardTask, cache_dtype


def cap_rows(frames: int, cap: int | None, seed: int, file_index: int) -> np.ndarray | None:
    """Which rows ``--max-frames-file`` keeps: ``cap`` of them at random (seeded per file), in order."""
    if cap is None or frames <= cap:
        return None
    return np.sort(np.random.default_rng([seed, file_index, 1]).choice(frames, cap, replace=False))


def l2_normalized(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as torch.nn.functional.normalize (length floored at 1e-12)."""
    norms = np.sqrt(np.square(features, dtype=np.float32).sum(axis=1, keepdims=True))
    return features / np.maximum(norms, 1e-12)


def keep_mask(frames: int, percent: float, seed: int, file_index: int) -> np.ndarray | None:
    """Which frames of one file ``--percent`` keeps (None: all of them)."""
    if percent >= 100:
        return None
    return np.random.default_rng([seed, file_index]).random(frames) < percent / 100


class ShardWorker:
    def __init__(self, model: str = "logmel", layer: int | None = None, normalize: str = "auto", *,
                 percent: float = 100.0, seed: int = 0, threads: int | None = None,
                 encoder: Encoder | None = None, channel: int | str = CHANNEL_MEAN, trim_db: float | None = None,
                 pad_last_frame: bool = False, feature_norm: str = "none",
                 max_frames_file: int | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.extractor = FeatureExtractor(encoder if encoder is not None else load_encoder(model, layer, normalize))
        self.percent = percent
        self.seed = seed
        self.preprocess = Preprocess(channel=channel, trim_db=trim_db, pad_last_frame=pad_last_frame)
        self.feature_norm = feature_norm
        self.max_frames_file = max_frames_file

    def file_features(self, path: str) -> np.ndarray:
        """``[frames, dim]`` features of one file, prepared as the processor options say."""
        channel = self.preprocess.channel
        _, blocks = prepared_blocks(lambda: file_blocks(path, channel=channel), self.preprocess)
        feats = self.extractor.features(blocks)
        return l2_normalized(feats) if self.feature_norm == "l2" else feats

    def __call__(self, task: ShardTask) -> ShardResult:
        dim = self.extractor.encoder.spec.dim
        pieces, files, errors = [], [], []
        for planned in task.files:
            try:
                feats = self.file_features(planned.path)
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
            capped = cap_rows(len(feats), self.max_frames_file, self.seed, planned.index)
            if capped is not None:
                feats = feats[capped]
            pieces.append(feats)
            files.append({"path": planned.path, "frames": frames, "rows": len(feats)})
        features = cache_dtype(np.concatenate(pieces)) if pieces else np.zeros((0, dim), np.float16)
        return ShardResult(task.index, features, files, errors)
