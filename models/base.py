"""What every encoder adapter is: a frozen torch module from 16 kHz waveform to frame features.

The module includes the waveform normalization its checkpoint expects, so the same module is what
training extracts features with and what export turns into ONNX: train and export cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderSpec:
    """Identity and shape of an encoder cut at one layer."""

    name: str  # "logmel", a hub id or a local folder, as the user gave it
    encoder_type: str  # "logmel", "hubert", "wav2vec2", "wavlm", "data2vec-audio", ...
    layer: int  # features are hidden_states[layer]
    num_layers: int  # depth of the full encoder
    dim: int  # feature dimension at that layer
    normalization: str  # "none" or "utterance" (zero mean, unit variance over the input)
    licence: str | None = None
    config_sha256: str | None = None  # of the checkpoint's config, for provenance


class Encoder(nn.Module):
    """Waveform ``[batch, samples]`` float32 at 16 kHz -> features ``[batch, frames, dim]``."""

    spec: EncoderSpec

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def utterance_normalize(waveform: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per input row, as transformers' Wav2Vec2FeatureExtractor does.

    ``(x - mean) / sqrt(var + 1e-7)`` with the population variance, matching
    ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``.
    """
    mean = waveform.mean(dim=-1, keepdim=True)
    centred = waveform - mean
    var = (centred * centred).mean(dim=-1, keepdim=True)
    return centred / torch.sqrt(var + 1e-7)
