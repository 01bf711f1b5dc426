"""matplotlib, imported only when a plot is drawn (it is the optional ``[plot]`` extra).

Figures are drawn on the Agg canvas directly, without pyplot: no display, no global figure state,
and the saved image has exactly the requested pixel size.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AudiotokError, SettingsError
from ..formats.staging import atomic_path

DPI = 100  # pixels per inch: figure inches x DPI = image pixels
IMAGE_FORMATS = ("png", "svg", "pdf")


class PlotUnavailable(AudiotokError):
    """matplotlib is not installed."""


def new_figure(width_px: int, height_px: int):
    """An empty matplotlib Figure on an Agg canvas, ``width_px`` x ``height_px`` when saved as PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib, which is not installed: "
                              "pip install 'audiotok[plot]'") from None
    if width_px < 200 or height_px < 150:
        raise SettingsError(f"plot size {width_px}x{height_px} px is too small (at least 200x150)")
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def image_format(path: str | Path) -> str:
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in IMAGE_FORMATS:
        raise SettingsError(f"-o {path}: write a .png, .svg or .pdf image")
    return fmt


PNG_SOFTWARE = "audiotok"  # the PNG Software chunk: marks an image audiotok may replace (train's usage plot)


def save_figure(figure, path: str | Path) -> None:
    """Save atomically (temp file, then rename), in the format the name's extension says."""
    with atomic_path(path) as tmp:
        render_figure(figure, tmp, image_format(path))


def literal_text(figure) -> None:
    """Make every text in ``figure`` draw as the characters it holds: file names are user data.

    A name that is not UTF-8 reaches Python with lone surrogates, which the font code refuses (a
    TypeError deep in matplotlib), and a name with two ``$`` would be parsed as TeX math (a parse
    error, or a wrong title). Surrogates are shown escaped (``\\udcff``, as audiotok's messages show
    them) and math parsing is off; audiotok's own labels use neither.
    """
    from matplotlib.text import Text

    for text in figure.findobj(Text):
        content = text.get_text()
        if isinstance(content, str):
            shown = content.encode("utf-8", "backslashreplace").decode("utf-8")
            if shown != content:
                text.set_text(shown)
        text.set_parse_math(False)


def render_figure(figure, file: str | Path, fmt: str) -> None:
    """Write ``figure`` to ``file`` as it is (a staged temp file: the caller renames it into place)."""
    literal_text(figure)
    metadata = {"Software": PNG_SOFTWARE} if fmt == "png" else None
    figure.savefig(file, format=fmt, dpi=DPI, metadata=metadata)


def is_audiotok_png(content: bytes) -> bool:
    """Whether ``content`` is a PNG that :func:`save_figure` wrote (its Software text chunk says so)."""
    return content.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + PNG_SOFTWARE.encode() in content[:4096]
