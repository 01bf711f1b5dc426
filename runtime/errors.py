"""User-facing errors.

Every failure a user can cause (a bad file, a bad bundle, a bad setting) raises a subclass of
:class:`AudiotokError` with a message that fits on one line; the CLI prints it on stderr and exits
non-zero instead of showing a traceback.
"""


class AudiotokError(Exception):
    """A problem with the user's input, reported as one line."""


class AudioError(AudiotokError):
    """Audio that cannot be read or used (missing, corrupt, empty, NaN/Inf)."""


class BundleError(AudiotokError):
    """A file that is not a usable audiotok bundle."""


class SettingsError(AudiotokError):
    """Options that cannot work together."""
