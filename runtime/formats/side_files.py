"""Recognising audiotok's own side files before replacing or removing them, and reading them safely.

A run writes files beside its output (``OUT.run.json``, ``OUT.errors.jsonl``, train's sidecar and
usage plot). A file of the same name that the user made must never be replaced, so each is
recognised by its content first. Reads are bounded: a side file is small, and a huge or special
file is simply not ours.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from .staging import OutputError

SIDE_FILE_LIMIT = 64 * 2**20  # bytes read to recognise a side file as audiotok's own; bigger is not ours


def read_bounded(path: Path, limit: int = SIDE_FILE_LIMIT) -> bytes | None:
    """A regular file's bytes, or None when it is not a regular file or is larger than ``limit``."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except OSError:
        return None


def read_head(path: Path, size: int = 2**16) -> bytes:
    """The first ``size`` bytes of a file (empty if it cannot be read): enough to recognise its format."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def check_side_file(path: Path, is_ours: Callable[[bytes], bool], what: str) -> None:
    """Refuse to go on when ``path`` exists and is not ``what`` that audiotok wrote (it would be replaced).

    ``is_ours`` recognises audiotok's own file from its content; anything else (a user's file of the
    same name, a folder, a link) is left alone and the run stops before it starts.
    """
    if not os.path.lexists(path):
        return
    content = read_bounded(path)
    try:
        ours = content is not None and is_ours(content)
    except (ValueError, RecursionError, TypeError):
        ours = False
    if not ours:
        raise OutputError(f"{path} exists and is not {what} audiotok wrote; audiotok would replace it: "
                          "move it away or choose another -o")


def read_json_object(path: Path, limit: int = SIDE_FILE_LIMIT) -> dict:
    """A small JSON object file, or OutputError naming the file (and line) when it is anything else."""
    content = read_bounded(path, limit)
    if content is None:
        raise OutputError(f"{path}: not a regular file of at most {limit} bytes")
    try:
        data = json.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = content[:exc.start].count(b"\n") + 1
        raise OutputError(f"{path}:{line}: not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise OutputError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise OutputError(f"{path}: holds a JSON {type(data).__name__}, not an object")
    return data
