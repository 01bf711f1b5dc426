"""Is this path a regular file? Asked with ``os.stat`` before anything opens it.

Opening a FIFO for reading blocks until a writer appears (forever, for a FIFO nobody feeds), and
a character device, socket or ``/dev/stdin`` cannot be seeked, which every decoder and
onnxruntime need. So audio, bundles and manifests are checked here first and refused with one
line that says what the path is instead; piped audio has its own command (``stream --input -``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import AudiotokError

PIPED_AUDIO_HINT = "for piped audio use `audiotok stream BUNDLE --input -`"


def describe(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in the words of ``ls -l``'s first column."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def special_kind(path: str | os.PathLike) -> str | None:
    """None for a regular file (or a symlink to one), ``"missing"``, or what else it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:  # a/b where a is a file
        return "missing"
    except OSError as exc:  # permission denied on a parent, a symlink loop, a name too long
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    return None if stat.S_ISREG(mode) else describe(mode)


def require_regular_file(path: str | os.PathLike, error: type[AudiotokError], *, what: str,
                         hint: str | None = None, shown: str | None = None, missing: str = "no such file") -> Path:
    """``path`` as a Path if it is a regular file; else raise ``error`` naming what it is instead.

    ``what`` names the expected thing ("an audio file", "an ONNX bundle"); ``hint`` is added to the
    message for pipes and devices, where the user most likely meant to stream; ``shown`` is how the
    path appears in the message (as the user typed it, e.g. ``@list.tsv``).
    """
    p = Path(path)
    kind = special_kind(p)
    if kind is None:
        return p
    name = shown or str(p)
    if kind == "missing":
        raise error(f"{name}: {missing}")
    if kind.startswith("unreadable"):
        raise error(f"{name}: {kind}")
    tail = f"; {hint}" if hint and kind != "a folder" else ""
    raise error(f"{name}: is {kind}, not {what}{tail}")
