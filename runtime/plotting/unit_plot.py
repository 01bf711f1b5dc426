"""The units of one recording, drawn under its waveform and spectrogram on one time axis.

Seeing where unit boundaries fall against the spectrogram is the quickest check that a vocabulary
segments speech sensibly (stable units over vowels, changes at phone boundaries, one unit for
silence). Frame ``i`` covers samples ``[320 i, 320 i + 400)``; it is drawn centred on that span,
20 ms wide, so unit cells line up with the audio they were computed from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import FRAME_SECONDS, HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from ..unit_runs import dedup

SPECTROGRAM_WINDOW = 400  # samples: 25 ms Hann window
SPECTROGRAM_HOP = 160  # samples: 10 ms
SPECTROGRAM_FLOOR_DB = 80.0  # dynamic range shown below the loudest bin
MAX_LABELLED_RUNS = 120  # above this many runs of equal units in view, ids are not written on the strip
WAVEFORM_POINTS = 4000  # above this many samples in view, the waveform is drawn as a min/max envelope
MAX_MARKED_RUNS = 600  # above this many runs in view, run boundaries are not drawn
UNIT_COLORMAP = "tab20"  # 20 colours, by unit id modulo 20


@dataclass(frozen=True)
class PlotWindow:
    start: float  # seconds
    stop: float  # seconds


def frame_centre(i: np.ndarray | int) -> np.ndarray:
    return (np.asarray(i) * HOP_SAMPLES + RECEPTIVE_FIELD_SAMPLES / 2) / SAMPLE_RATE


def _spectrogram_db(samples: np.ndarray) -> np.ndarray:
    """``[freq bins, frames]`` log power, 0 dB at the loudest bin, floored at -SPECTROGRAM_FLOOR_DB."""
    if len(samples) < SPECTROGRAM_WINDOW:
        samples = np.pad(samples, (0, SPECTROGRAM_WINDOW - len(samples)))
    count = 1 + (len(samples) - SPECTROGRAM_WINDOW) // SPECTROGRAM_HOP
    frames = np.lib.stride_tricks.sliding_window_view(samples, SPECTROGRAM_WINDOW)[::SPECTROGRAM_HOP][:count]
    power = np.abs(np.fft.rfft(frames * np.hanning(SPECTROGRAM_WINDOW), axis=1)) ** 2
    db = 10 * np.log10(power + 1e-12)
    return np.maximum(db - db.max(), -SPECTROGRAM_FLOOR_DB).T


def _draw_waveform(ax, samples: np.ndarray, t0: float) -> None:
    if len(samples) > WAVEFORM_POINTS:
        buckets = np.array_split(samples, WAVEFORM_POINTS // 2)
        edges = t0 + np.cumsum([0] + [len(b) for b in buckets[:-1]]) / SAMPLE_RATE
        ax.fill_between(edges, [b.min() for b in buckets], [b.max() for b in buckets], color="tab:blue",
                        linewidth=0.5)
    else:
        ax.plot(t0 + np.arange(len(samples)) / SAMPLE_RATE, samples, color="tab:blue", linewidth=0.6)
    peak = float(np.abs(samples).max()) if len(samples) else 1.0
    ax.set_ylim(-1.05 * max(peak, 1e-3), 1.05 * max(peak, 1e-3))
    ax.set_ylabel("amplitude")


def _draw_units(ax, units: np.ndarray, first: int, k: int) -> None:
    ax.set_yticks([])
    ax.set_ylabel("unit")
    if len(units) == 0:
        ax.text(0.5, 0.5, "no frames in view", transform=ax.transAxes, ha="center", va="center")
        return
    left = frame_centre(first) - FRAME_SECONDS / 2
    right = frame_centre(first + len(units) - 1) + FRAME_SECONDS / 2
    ax.imshow((units % 20)[None, :], aspect="auto", cmap=UNIT_COLORMAP, vmin=0, vmax=19,
              extent=(left, right, 0, 1), interpolation="nearest")
    runs, lengths = dedup(units)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    if len(runs) <= MAX_MARKED_RUNS:  # boundaries, since ids 20 apart share a colour
        ax.vlines(left + starts[1:] * FRAME_SECONDS, 0, 1, colors="black", linewidth=0.4)
    if len(runs) <= MAX_LABELLED_RUNS:
        for unit, start, length in zip(runs.tolist(), starts.tolist(), lengths.tolist()):
            centre = left + (start + length / 2) * FRAME_SECONDS
            ax.text(centre, 0.5, str(unit), ha="center", va="center", fontsize=7, rotation=90 if length < 3 else 0)
    ax.set_xlabel("time (s)")
    ax.set_title(f"units ({len(units)} frames, {len(runs)} runs, k={k})", fontsize=9, loc="left")


def draw_units_figure(figure, samples: np.ndarray, units: np.ndarray, window: PlotWindow, *, k: int,
                      title: str) -> None:
    """Waveform, spectrogram and unit strip of ``samples`` (16 kHz) between ``window.start`` and ``.stop``."""
    a, b = int(round(window.start * SAMPLE_RATE)), int(round(window.stop * SAMPLE_RATE))
    view = samples[a:b]
    t0, t1 = a / SAMPLE_RATE, max(b, a + 1) / SAMPLE_RATE
    frames = np.arange(len(units))
    centres = frame_centre(frames)
    shown = (centres >= t0) & (centres < t1)
    first = int(frames[shown][0]) if shown.any() else 0

    wave_ax, spec_ax, unit_ax = figure.subplots(3, 1, sharex=True, height_ratios=[1.0, 1.6, 0.5])
    figure.suptitle(title, fontsize=10)
    _draw_waveform(wave_ax, view, t0)
    spec = _spectrogram_db(view)
    spec_ax.imshow(spec, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                   extent=(t0, t0 + (spec.shape[1] * SPECTROGRAM_HOP + SPECTROGRAM_WINDOW - SPECTROGRAM_HOP)
                           / SAMPLE_RATE, 0, SAMPLE_RATE / 2000))
    spec_ax.set_ylabel("kHz")
    _draw_units(unit_ax, units[shown], first, k)
    unit_ax.set_xlim(t0, t1)
