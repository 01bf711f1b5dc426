"""The phones x units confusion image of `audiotok evaluate --confusion` (needs the [plot] extra).

Rows are phones, most frequent first; each row shows P(unit | phone). Units are sorted by the row
of the phone they most often carry, so good units line up on a diagonal and babble spreads out.
Units never seen on a labelled frame are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .canvas import new_figure, save_figure

WIDTH_PX, HEIGHT_PX = 1600, 1000


def sorted_table(table: np.ndarray, phones: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(rows normalised to P(unit | phone), phone names, unit ids) in display order."""
    table = np.asarray(table, dtype=np.float64)
    row_order = np.argsort(-table.sum(axis=1), kind="stable")
    table = table[row_order]
    used = np.flatnonzero(table.sum(axis=0) > 0)
    best_row = table[:, used].argmax(axis=0)
    share = table[best_row, used] / table[:, used].sum(axis=0)
    unit_order = used[np.lexsort((-share, best_row))]
    rows = table[:, unit_order] / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
    return rows, [phones[i] for i in row_order], unit_order


def write_confusion(table: np.ndarray, phones: list[str], path: str | Path, *, title: str) -> None:
    figure = new_figure(WIDTH_PX, HEIGHT_PX)
    rows, names, units = sorted_table(table, phones)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(rows, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0,
                      vmax=max(rows.max(), 1e-9))
    ax.set_yticks(range(len(names)), names, fontsize=max(4, min(10, 600 // max(len(names), 1))))
    ax.set_xlabel(f"{len(units)} units, sorted by their most frequent phone")
    ax.set_ylabel("phone (most frequent first)")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, label="P(unit | phone)")
    save_figure(figure, path)
