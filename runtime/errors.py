"""User-facing errors.

Every failure a user can cause (a bad file, a bad bundle, a bad setting) raises a subclass of
:class:`AudiotokError` with a message that fits on one line; the CLI prints it on stderr and exits
non-zero instead of showing a traceback.
"""

import unicodedata


class AudiotokError(Exception):
    """A problem with the user's input, reported as one line."""


class AudioError(AudiotokError):
    """Audio that cannot be read or used (missing, corrupt, empty, NaN/Inf)."""


class BundleError(AudiotokError):
    """A file that is not a usable audiotok bundle."""


class SettingsError(AudiotokError):
    """Options that cannot work together."""


def one_line(text: str) -> str:
    """``text`` with control and line-break characters escaped, so a message stays one line."""
    return "".join(repr(c)[1:-1] if is_line_break(c) else c for c in text)


def is_line_break(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")
