"""Standard output as an output like any other: a full disk or a closed descriptor is one error line.

``| head`` closing the pipe early is not an error (the reader has what it wanted; exit 0), but
``>/dev/full`` (ENOSPC), an I/O error, or a stdout closed with ``>&-`` (EBADF) is: the units did not
arrive, so the run must not exit 0. Python hides the last two (``print`` to a closed stdout does
nothing; a failed final flush happens after ``main`` returned), so the dispatcher wraps stdout in
:class:`GuardedStdout` and flushes it itself with :func:`flush_stdout`.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import IO

from ..formats.staging import OutputError

STD_FDS = (0, 1, 2)


def fill_closed_std_fds() -> None:
    """Point a closed fd 0, 1 or 2 at /dev/null (Python already set ``sys.stdout`` to None).

    Otherwise the first file audiotok opens would get fd 1, and a native library or a worker
    process writing to "stdout" would write into a staged output.
    """
    for fd in STD_FDS:
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # the lowest free fd is taken first, so this is fd itself unless another is open
                os.dup2(null, fd)
                os.close(null)


class GuardedStdout:
    """``sys.stdout`` whose write and flush failures name it: OutputError("stdout: No space left on device").

    BrokenPipeError passes through unchanged (the dispatcher's ``| head`` rule). ``stream`` None is
    a stdout that was closed before audiotok started: the first write is an EBADF error.
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if self._stream is None:
            raise OutputError(f"stdout: {os.strerror(errno.EBADF)} (standard output is closed)")
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> OutputError:
        _discard_pending_output(self._stream)
        return OutputError(f"stdout: {exc.strerror or os.strerror(exc.errno or errno.EIO)}")

    def __getattr__(self, name: str):
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _discard_pending_output(stream: IO[str]) -> None:
    """Point the failed descriptor at /dev/null, so Python's flush at exit does not fail again with a
    second message after the error line (only for a real descriptor, never a test's capture)."""
    try:
        fd = stream.fileno()
    except (OSError, AttributeError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def install() -> tuple[object, GuardedStdout]:
    """Wrap ``sys.stdout``; returns (the previous object, the guard) for :func:`restore`."""
    previous = sys.stdout
    guard = GuardedStdout(previous)
    sys.stdout = guard
    return previous, guard


def restore(previous: object, guard: GuardedStdout) -> None:
    if sys.stdout is guard:
        sys.stdout = previous


def flush_stdout() -> None:
    """Flush now, inside the error handling, so a failure of the last write is reported, not lost."""
    sys.stdout.flush()
