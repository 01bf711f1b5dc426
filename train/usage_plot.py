"""A cluster-usage plot beside the centroids: how often each unit occurs in the training features.

A healthy vocabulary uses most clusters with a smooth fall-off; a few dominant units or many empty
ones show at a glance (too large k, too little data, silence dominating). Drawn only when
matplotlib (the ``[plot]`` extra) is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiotok.runtime.formats.file_set import FileSet
from audiotok.runtime.plotting.canvas import PlotUnavailable, new_figure, render_figure

from .kmeans import UnitStats

USAGE_PLOT_SIZE = (1200, 600)  # pixels


def usage_plot_path(centroids: str | Path) -> Path:
    """``units.npy`` -> ``units.usage.png``."""
    return Path(centroids).with_suffix(".usage.png")


def stage_usage_plot(files: FileSet, centroids: str | Path, counts: np.ndarray, stats: UnitStats) -> Path | None:
    """Draw unit frequencies (ranked, log scale) and stage the PNG beside ``centroids`` in ``files``;
    returns where it will be, or None when matplotlib is missing."""
    try:
        figure = new_figure(*USAGE_PLOT_SIZE)
    except PlotUnavailable:
        return None
    k, total = len(counts), int(counts.sum())
    order = np.argsort(-counts, kind="stable")
    share = counts[order] / max(total, 1)
    ax = figure.subplots()
    ax.bar(np.arange(k), np.where(share > 0, share, np.nan), width=1.0, color="tab:blue")
    ax.axhline(1 / k, color="tab:red", linewidth=1, linestyle="--", label=f"uniform (1/{k})")
    ax.set_yscale("log")
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_xlabel("units, most frequent first")
    ax.set_ylabel("share of training frames")
    if k <= 64:
        ax.set_xticks(np.arange(k), [str(u) for u in order.tolist()], fontsize=7, rotation=90)
    ax.legend(loc="upper right")
    ax.set_title(f"{Path(centroids).name}: k={k}, {stats.clusters_used} used, perplexity {stats.perplexity:.1f}, "
                 f"{total} frames", fontsize=10)
    path = usage_plot_path(centroids)
    render_figure(figure, files.stage(path), "png")
    return path
