"""Small, seeded perturbations of 16 kHz audio, for measuring how stable units are.

Specs (``--perturb``), each one row of the stability table:

  noise:SNR_DB        white noise at that signal-to-noise ratio (over the whole file)
  noise:SNR_DB:recorded  a random stretch of a --noise-dir recording at that ratio
                      (with --noise-dir, every noise:SNR_DB also gets its recorded row)
  speed:FACTOR        played FACTOR times faster (soxr resampling: pitch moves too), 0.5-2
  gain:DB             louder or quieter by DB decibels, no clipping (float samples)
  shift:SAMPLES       the first SAMPLES samples dropped (negative: that many zeros prepended),
                      compared on the common frame grid; 160 is half a frame
  reverb:RT60_S       convolved with a synthetic room: exponentially decaying white noise whose
                      level falls 60 dB in RT60_S seconds (0 < RT60_S <= 3), loudness kept

Random draws come from a generator seeded by --seed, the file's path and the spec, so a report
is reproduced exactly by the same command, whatever order or subset of specs is given.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from ..audio.decode import file_blocks
from ..constants import HOP_SAMPLES, SAMPLE_RATE
from ..errors import AudioError, SettingsError

KINDS = ("noise", "speed", "gain", "shift", "reverb")
SNR_RANGE_DB = (-30.0, 100.0)
SPEED_RANGE = (0.5, 2.0)
GAIN_RANGE_DB = (-60.0, 60.0)
MAX_SHIFT_SAMPLES = SAMPLE_RATE  # one second
RT60_RANGE_S = (0.0, 3.0)  # exclusive low, inclusive high
RT60_DECAY = math.log(1000.0)  # amplitude falls by 10^-3 (60 dB) over RT60


@dataclass(frozen=True)
class Perturbation:
    kind: str  # one of KINDS
    value: float
    recorded: bool = False  # noise from --noise-dir instead of white noise

    @property
    def name(self) -> str:
        value = f"{int(self.value)}" if self.kind == "shift" else f"{self.value:g}"
        return f"{self.kind}:{value}" + (":recorded" if self.recorded else "")

    @property
    def frame_offset(self) -> int | None:
        """Frames the perturbed units are ahead of the clean ones; None where grids do not line up."""
        if self.kind == "speed":
            return None
        return int(self.value / HOP_SAMPLES) if self.kind == "shift" else 0


def _number(spec: str, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"--perturb {spec}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"--perturb {spec}: {what} must be finite")
    return value


def _in_range(spec: str, value: float, low: float, high: float, what: str, *, open_low: bool = False) -> float:
    if value < low or value > high or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise SettingsError(f"--perturb {spec}: {what} must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return value


def parse_perturbation(spec: str) -> Perturbation:
    """``kind:value`` (see the module docstring), checked, or SettingsError naming the spec."""
    parts = spec.split(":")
    kind = parts[0].strip().lower()
    if kind not in KINDS or len(parts) < 2:
        raise SettingsError(f"--perturb {spec}: expected KIND:VALUE with KIND one of {', '.join(KINDS)} "
                            "(e.g. noise:10, speed:1.1, gain:-6, shift:160, reverb:0.3)")
    if len(parts) > 2 and not (kind == "noise" and len(parts) == 3 and parts[2] in ("white", "recorded")):
        raise SettingsError(f"--perturb {spec}: too many fields (only noise takes a third: white or recorded)")
    if kind == "noise":
        value = _in_range(spec, _number(spec, parts[1], "SNR in dB"), *SNR_RANGE_DB, "SNR in dB")
        return Perturbation(kind, value, recorded=len(parts) == 3 and parts[2] == "recorded")
    if kind == "speed":
        return Perturbation(kind, _in_range(spec, _number(spec, parts[1], "speed factor"), *SPEED_RANGE,
                                            "speed factor"))
    if kind == "gain":
        return Perturbation(kind, _in_range(spec, _number(spec, parts[1], "gain in dB"), *GAIN_RANGE_DB, "gain in dB"))
    if kind == "shift":
        value = _number(spec, parts[1], "shift in samples")
        if value != int(value):
            raise SettingsError(f"--perturb {spec}: shift must be a whole number of samples, got {parts[1]!r}")
        return Perturbation(kind, _in_range(spec, value, -MAX_SHIFT_SAMPLES, MAX_SHIFT_SAMPLES, "shift in samples"))
    return Perturbation(kind, _in_range(spec, _number(spec, parts[1], "RT60 in seconds"), *RT60_RANGE_S,
                                        "RT60 in seconds", open_low=True))


def expand(specs: list[str], with_recorded_noise: bool) -> list[Perturbation]:
    """Parsed specs in order, duplicates dropped; each white noise row gains a recorded twin."""
    found: list[Perturbation] = []
    for spec in specs:
        p = parse_perturbation(spec)
        if p.recorded and not with_recorded_noise:
            raise SettingsError(f"--perturb {spec}: recorded noise needs --noise-dir")
        twins = [p, Perturbation(p.kind, p.value, recorded=True)] if (
            p.kind == "noise" and not p.recorded and with_recorded_noise) else [p]
        found.extend(t for t in twins if t not in found)
    return found


def seeded_rng(seed: int, path: str, perturbation: Perturbation) -> np.random.Generator:
    """Independent of the order files and specs come in: keyed by their names."""
    return np.random.default_rng([seed, zlib.crc32(path.encode()), zlib.crc32(perturbation.name.encode())])


class NoiseBank:
    """Recorded noise files (a folder, searched recursively), each read when a draw picks it."""

    def __init__(self, folder: str | None) -> None:
        from ..corpus.listing import folder_files

        self.files: list[str] = []
        if folder is not None:
            if not Path(folder).is_dir():
                raise SettingsError(f"--noise-dir {folder}: no such folder")
            self.files = [f.path for f in folder_files(Path(folder))]
            if not self.files:
                raise SettingsError(f"--noise-dir {folder}: no audio files in it")

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of one randomly chosen file from a random start, looped if it is shorter."""
        path = self.files[int(rng.integers(len(self.files)))]
        blocks = list(file_blocks(path))
        noise = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        if not len(noise) or not np.any(noise):
            raise AudioError(f"{path}: noise file is empty or silent")
        start = int(rng.integers(len(noise)))
        return np.resize(np.roll(noise, -start), n)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def _add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    signal, floor = _power(x), _power(noise)
    if signal == 0.0 or floor == 0.0:
        return x
    scale = math.sqrt(signal / (floor * 10.0 ** (snr_db / 10.0)))
    return (x + scale * noise).astype(np.float32)


def _reverb(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    n_ir = max(2, int(rt60 * SAMPLE_RATE))
    t = np.arange(n_ir) / SAMPLE_RATE
    ir = rng.standard_normal(n_ir) * np.exp(-RT60_DECAY * t / rt60)
    ir[0] = 1.0  # the direct sound
    size = 1 << (len(x) + n_ir - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    dry, power = _power(x), _power(wet)
    return (wet * math.sqrt(dry / power) if power > 0 else wet).astype(np.float32)


def apply(p: Perturbation, x: np.ndarray, rng: np.random.Generator, noise: NoiseBank | None = None) -> np.ndarray:
    """``x`` (16 kHz mono float32) perturbed by ``p``."""
    if p.kind == "noise":
        source = noise.draw(len(x), rng) if p.recorded and noise is not None else rng.standard_normal(len(x))
        return _add_noise(x, source, p.value)
    if p.kind == "speed":
        return x if p.value == 1.0 else soxr.resample(x, SAMPLE_RATE * p.value, SAMPLE_RATE, quality="HQ")
    if p.kind == "gain":
        return (x * 10.0 ** (p.value / 20.0)).astype(np.float32)
    if p.kind == "shift":
        s = int(p.value)
        return x[s:] if s >= 0 else np.concatenate([np.zeros(-s, np.float32), x])
    return _reverb(x, p.value, rng)
