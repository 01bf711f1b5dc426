"""Speech-like test audio from numpy alone, for measuring speed where no recording is at hand.

An encoder's arithmetic does not depend on what it hears, but a benchmark on silence or white
noise invites doubt (and denormal-number slow paths), so the signal has what speech has: a
glottal pulse train at a gliding pitch, formant resonances that change every syllable, unvoiced
noise stretches and short pauses. The same seed gives the same samples.
"""

from __future__ import annotations

import numpy as np

from ..constants import SAMPLE_RATE

SYLLABLE_SECONDS = 0.25  # about four syllables per second
RESONANCE_SECONDS = 0.02  # impulse response length of the formant filter
FORMANT_RANGES = ((300.0, 900.0), (900.0, 2300.0), (2200.0, 3200.0))  # Hz: F1, F2, F3
BANDWIDTHS = (80.0, 120.0, 160.0)  # Hz


def _formant_filter(rng: np.random.Generator) -> np.ndarray:
    """Impulse response of three damped resonances at random formant frequencies."""
    t = np.arange(int(RESONANCE_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    response = np.zeros_like(t)
    for (low, high), bandwidth in zip(FORMANT_RANGES, BANDWIDTHS):
        response += np.exp(-np.pi * bandwidth * t) * np.sin(2 * np.pi * rng.uniform(low, high) * t)
    return response


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of 16 kHz float32 speech-like audio, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 15 * np.sin(2 * np.pi * 3.1 * t)
    pulses = (np.diff(np.floor(np.cumsum(pitch / SAMPLE_RATE)), prepend=0.0) > 0).astype(np.float64)
    syllable = int(SYLLABLE_SECONDS * SAMPLE_RATE)
    out = np.zeros(n)
    for start in range(0, n, syllable):
        stop = min(n, start + syllable)
        voiced = rng.uniform() > 0.25
        source = pulses[start:stop] * 8 if voiced else rng.standard_normal(stop - start) * 0.3
        envelope = np.sin(np.pi * np.arange(stop - start) / syllable) * (rng.uniform() > 0.1)
        out[start:stop] = np.convolve(source, _formant_filter(rng))[: stop - start] * envelope
    out += rng.standard_normal(n) * 1e-3
    return (0.5 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)
