"""Capture what C libraries write straight to file descriptor 2 while they decode or run a graph.

libmpg123 (inside libsndfile) prints ``Note: Illegal Audio-MPEG-Header ...`` for a broken mp3 and
onnxruntime prints coloured ``[E:onnxruntime:...]`` lines before it raises; neither goes through
Python's ``sys.stderr``, so neither can be silenced from Python. :func:`captured_stderr` points
fd 2 at a temporary file for the block, puts it back afterwards and keeps what was written: on
success it is dropped, on failure the caller turns it into one line of its error message.

Cost per block: four syscalls and a tell, a few microseconds (streaming runs the graph every
640 ms). fd 2 belongs to the whole process, so one lock serialises capturing threads; nested
captures in one thread share the outer one. A thread that writes to stderr while another captures
would have its text swallowed, so only decode and graph calls are wrapped, never a progress bar.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

STDERR_FD = 2
MAX_KEPT_BYTES = 64 * 1024  # what a failing call may print that is kept for its message
MAX_LINE_CHARS = 200  # the longest library line quoted in an error message

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "2026-01-01 12:00:00.1 [E:onnxruntime:, x.cc:1 F] "
_ORT_PREFIX = re.compile(r"^\S+ \S+ \[[EWIV]:onnxruntime:[^\]]*\]\s*")
_ORT_CODE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")  # "[ONNXRuntimeError] : 1 : FAIL : "
_SOURCE_LOCATION = re.compile(r"/\S+\.(?:h|hpp|cc|cpp|c):\d+ (?:\S+\(.*?\)(?: const)? )?")  # "/src/x.h:91 f(int) "
_NOTE_PREFIX = re.compile(r"^(Note|Warning|Info):\s*", re.IGNORECASE)
_lock = threading.RLock()
_depth = 0
_sink: IO[bytes] | None = None  # one file per process, reused (truncated) each time


@dataclass
class Captured:
    """What the libraries wrote during one :func:`captured_stderr` block (filled in when it ends)."""

    text: str = ""
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The most telling line, cleaned: the last error line if any, else the first; "" if none.

        (libmpg123 names the problem first and then narrates its resync attempts.)
        """
        if not self.lines:
            return ""
        errors = [line for line in self.lines if "error" in line.lower()]
        line = errors[-1] if errors else self.lines[0]
        line = _NOTE_PREFIX.sub("", line)
        return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS - 3] + "..."


def library_message(exc: BaseException, noise: Captured | None = None, limit: int = 300) -> str:
    """One line from a library exception: without onnxruntime's status code prefix and C++ source
    locations; what the library printed when the exception itself says nothing."""
    text = str(exc).strip()
    if not text:
        return (noise.summary() if noise else "") or type(exc).__name__
    line = " ".join(text.split())
    line = _SOURCE_LOCATION.sub("", _ORT_CODE.sub("", line))
    return line if len(line) <= limit else line[:limit - 3] + "..."


def clean_lines(text: str) -> list[str]:
    """Non-empty lines without colour codes, onnxruntime's timestamp prefix or repeats."""
    seen: list[str] = []
    for raw in text.splitlines():
        line = _ORT_PREFIX.sub("", _ANSI.sub("", raw)).strip()
        if line and line not in seen:
            seen.append(line)
    return seen


def _sink_file() -> IO[bytes]:
    global _sink
    if _sink is None:
        _sink = tempfile.TemporaryFile(prefix="audiotok-stderr-", buffering=0)
    return _sink


@contextmanager
def captured_stderr() -> Iterator[Captured]:
    """Redirect fd 2 to a private file for the block; the yielded :class:`Captured` is filled at exit.

    Falls back to capturing nothing when fd 2 is closed or cannot be duplicated: the block still runs.
    """
    global _depth
    captured = Captured()
    with _lock:
        if _depth:  # an outer block in this thread already captures
            _depth += 1
            try:
                yield captured
            finally:
                _depth -= 1
            return
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(STDERR_FD)
        except OSError:  # no fd 2 at all (started with 2>&-): nothing to capture
            yield captured
            return
        sink = _sink_file()
        sink.seek(0)
        sink.truncate()
        os.dup2(sink.fileno(), STDERR_FD)
        _depth = 1
        try:
            yield captured
        finally:
            _depth = 0
            os.dup2(saved, STDERR_FD)
            os.close(saved)
            size = sink.seek(0, os.SEEK_END)
            if size:
                sink.seek(max(0, size - MAX_KEPT_BYTES))
                captured.text = sink.read().decode("utf-8", "replace")
                captured.lines = clean_lines(captured.text)
