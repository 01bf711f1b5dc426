"""Numeric options, parsed once: an integer or a finite number inside stated bounds, or one error line.

Every ``int``/``float`` option of every command is declared with ``type=integer(...)`` or
``type=number(...)``. argparse passes the text here; a refusal raises :class:`SettingsError` (not
ValueError, which argparse would turn into a usage dump and exit 2), so the dispatcher prints one
``audiotok: error: --OPTION ...`` line and exits 1. Without explicit bounds an option still has a
ceiling: ``inf``, ``nan`` and ``1e400`` never reach the code that would overflow on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import SettingsError
from ..bundle.session import THREADS_PER_CORE, thread_limit

INT_CEILING = 2**31 - 1  # what the C libraries below (onnxruntime, numpy indexing, sklearn seeds) take as int32
FLOAT_CEILING = 1e9  # seconds, hours, milliseconds, dB: a billion of anything is a typo
SEED_MAX = 2**32 - 1  # numpy and sklearn seeds are unsigned 32-bit
MAX_LAYER = 1000  # hidden-state index: the deepest speech encoders have 48 layers
MAX_TEXT = 40  # characters of a number echoed back in a message


def _shown(text: str) -> str:
    return repr(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "...")


def _plain(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _bounded(option: str, value: float, low: float | None, high: float | None, why: str, text: str) -> None:
    if low is not None and value < low:
        raise SettingsError(f"{option} must be at least {_plain(low)}, got {_shown(text)}")
    if high is not None and value > high:
        raise SettingsError(f"{option} must be at most {_plain(high)}{why}, got {_shown(text)}")


def integer(option: str, *, low: int | None = None, high: int | None = INT_CEILING,
            why: str = "") -> Callable[[str], int]:
    """An argparse ``type`` for a whole-number option within ``low..high`` (``why`` explains ``high``)."""

    def parse(text: str) -> int:
        stripped = text.strip()
        digits = stripped[1:] if stripped[:1] in "+-" else stripped
        if not (digits.isascii() and digits.isdigit()):
            raise SettingsError(f"{option} must be an integer, got {_shown(text)}")
        if len(digits) > 18:  # past any bound here; int() of a huge string would be slow
            raise SettingsError(f"{option} must be at most {high if high is not None else INT_CEILING}{why}, "
                                f"got {_shown(text)}")
        value = int(stripped)
        _bounded(option, value, low, high, why, text)
        return value

    return parse


def number(option: str, *, low: float | None = None, high: float | None = FLOAT_CEILING,
           why: str = "") -> Callable[[str], float]:
    """An argparse ``type`` for a finite real option within ``low..high`` (the command checks finer ranges)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{option} must be a number, got {_shown(text)}") from None
        if not math.isfinite(value):
            raise SettingsError(f"{option} must be a finite number, got {_shown(text)}")
        _bounded(option, value, low, high, why, text)
        return value

    return parse


def threads(option: str = "--threads") -> Callable[[str], int]:
    """``--threads`` of a command that runs on this machine: 1 to :func:`~audiotok.runtime.bundle.session.thread_limit`."""
    return integer(option, low=1, high=thread_limit(), why=f" ({THREADS_PER_CORE} per core of this machine)")
