"""Audio for export-time parity checks when the user gives none: deterministic speech-like signal.

A glottal pulse train with a wandering pitch, shaped by three moving formant resonances, with
voiceless noise bursts and pauses. It is not speech, but it exercises the encoder across the
ranges speech does (harmonics, formant motion, onsets, silence), which is what a parity check needs.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from audiotok.runtime.constants import SAMPLE_RATE


def _resonator(signal: np.ndarray, centre_hz: np.ndarray, bandwidth_hz: float, block: int = 160) -> np.ndarray:
    """Two-pole resonance whose centre frequency moves every ``block`` samples (filter state carried)."""
    r = np.exp(-np.pi * bandwidth_hz / SAMPLE_RATE)
    out = np.empty_like(signal)
    state = np.zeros(2)
    for start in range(0, len(signal), block):
        a1 = 2 * r * np.cos(2 * np.pi * centre_hz[start] / SAMPLE_RATE)
        out[start:start + block], state = lfilter([1.0], [1.0, -a1, r * r], signal[start:start + block], zi=state)
    return out


def pseudo_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of 16 kHz float32 speech-like audio, peak 0.5; the same seed gives the same samples."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 15 * np.sin(2 * np.pi * 3.1 * t)
    phase = np.cumsum(pitch / SAMPLE_RATE)
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    noise = rng.standard_normal(n) * 0.3
    syllable = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))  # ~4 syllables per second
    voiced = (np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6)) > -0.6).astype(np.float64)
    source = pulses * voiced * 8 + noise * (1 - voiced)
    formants = [(500 + 300 * np.sin(2 * np.pi * 1.9 * t), 80.0),
                (1500 + 600 * np.sin(2 * np.pi * 1.1 * t + 1), 120.0),
                (2500 + 300 * np.sin(2 * np.pi * 0.8 * t + 2), 160.0)]
    out = sum(_resonator(source, f, bw) for f, bw in formants) * syllable
    pause = (np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6)) > 0.85)
    out[pause] *= 0.01
    out += rng.standard_normal(n) * 1e-3
    return (0.5 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)
