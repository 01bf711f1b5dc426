"""User-facing errors.

Every failure a user can cause (a bad file, a bad bundle, a bad setting) raises a subclass of
:class:`AudiotokError` with a message that fits on one line; the CLI prints it on stderr and exits
non-zero instead of showing a traceback.
"""

import os
import unicodedata


class AudiotokError(Exception):
    """A problem with the user's input, reported as one line."""


class AudioError(AudiotokError):
    """Audio that cannot be read or used (missing, corrupt, empty, NaN/Inf)."""


class BundleError(AudiotokError):
    """A file that is not a usable audiotok bundle."""


class SettingsError(AudiotokError):
    """Options that cannot work together."""


class SamplesError(SettingsError, AudioError, ValueError):
    """An argument of the Python API that no audio can have (a fractional or absurd sample rate, an axis
    of size zero): a ValueError for Python callers, and still one AudiotokError line in the CLI."""


def one_line(text: str) -> str:
    """``text`` with control and line-break characters escaped, so a message stays one line."""
    return "".join(repr(c)[1:-1] if is_line_break(c) else c for c in text)


def is_line_break(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def os_reason(exc: OSError) -> str:
    """The operating system's words for ``exc`` ("No space left on device"), never a Python repr."""
    if exc.strerror:
        return exc.strerror
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def os_error_line(exc: OSError, where: str | os.PathLike | None = None) -> str:
    """``PATH: reason`` for an OSError: ``where`` if given, else the path the OS named, else the reason alone."""
    path = where if where is not None else exc.filename
    reason = os_reason(exc)
    if path is None:
        return reason
    path = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if exc.filename2 is not None and where is None:
        return f"{path} -> {os.fsdecode(exc.filename2)}: {reason}"
    return f"{path}: {reason}"

