"""The built-in log-mel encoder: no download, same 20 ms frame grid as HuBERT's CNN.

400-sample Hann window, 320-sample hop, no centre padding, so ``frames = floor((n - 400) / 320) + 1``
exactly as the HuBERT/wav2vec2 convolution stack gives. The DFT is a strided convolution with fixed
cosine/sine kernels, which exports to a single ONNX Conv and keeps every frame a function of its
own 400 samples only (so streaming gives exactly the offline units).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audiotok.runtime.constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE

from .base import Encoder, EncoderSpec

N_MELS = 80
N_FFT = RECEPTIVE_FIELD_SAMPLES  # one DFT per 400-sample window: 201 bins at 40 Hz spacing
LOG_FLOOR = 1e-10  # power floor before the log: digital silence maps to log(1e-10), not -inf


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular HTK-scale filters from 0 Hz to Nyquist, ``[n_mels, n_fft // 2 + 1]``."""
    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz[None] - lower) / (centre - lower)
    falling = (upper - bins_hz[None]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


def dft_kernels(n_fft: int = N_FFT) -> np.ndarray:
    """Hann-windowed cosine and sine kernels, ``[2 * (n_fft // 2 + 1), 1, n_fft]``."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    k = np.arange(n_fft // 2 + 1)[:, None]
    phase = 2 * np.pi * k * n[None] / n_fft
    kernels = np.concatenate([np.cos(phase) * window, -np.sin(phase) * window])
    return kernels[:, None, :].astype(np.float32)


class LogMelEncoder(Encoder):
    """Log mel energies: ``[batch, samples]`` -> ``[batch, frames, 80]``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernels", torch.from_numpy(dft_kernels()))
        self.register_buffer("filterbank", torch.from_numpy(mel_filterbank().T.copy()))  # [bins, mels]
        self.spec = EncoderSpec(name="logmel", encoder_type="logmel", layer=0, num_layers=0, dim=N_MELS,
                                normalization="none", licence="Apache-2.0")

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(waveform.unsqueeze(1), self.kernels, stride=HOP_SAMPLES)
        real, imag = spec.transpose(1, 2).chunk(2, dim=-1)  # [batch, frames, bins] each
        power = real * real + imag * imag
        return torch.log(torch.clamp(power @ self.filterbank, min=LOG_FLOOR))
