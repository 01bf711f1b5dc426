"""Graph runs that Ctrl-C and SIGTERM stop at once, not when the run happens to end.

Python runs a signal handler only between bytecodes of the main thread; while onnxruntime's
``run()`` holds the main thread in C++ (with the GIL released) a handler waits for the whole run,
so a slow or endless graph ignored Ctrl-C. Here the C-level handler also writes the signal number
to a pipe (``signal.set_wakeup_fd``); a daemon thread reading it sets ``terminate`` on the
``RunOptions`` of every run in flight, onnxruntime stops at the next node, and :func:`stoppable`
raises KeyboardInterrupt in the main thread, which unwinds as Ctrl-C always did (staged outputs
removed, finished work kept).

Only the main thread can install the pipe; when it cannot (another thread, or a program that
already owns the wakeup fd, such as an asyncio loop) runs proceed as before.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import onnxruntime as ort

STOP_SIGNALS = {int(signal.SIGINT), int(signal.SIGTERM)}
_lock = threading.Lock()
_active: set[ort.RunOptions] = set()
_installed = False


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        if not set(data) & STOP_SIGNALS:
            continue
        with _lock:
            for options in _active:
                options.terminate = True


def _install() -> None:
    """Start the watcher once per process, from the main thread, if the wakeup fd is free."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:
        os.close(read_fd)
        os.close(write_fd)
        return
    if previous != -1:  # someone else's: give it back and leave runs as they were
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return
    threading.Thread(target=_watch, args=(read_fd,), name="audiotok-signal-watch", daemon=True).start()
    _installed = True


@contextmanager
def stoppable() -> Iterator[ort.RunOptions]:
    """RunOptions for one ``session.run``; a signal during the run stops it and raises KeyboardInterrupt.

    Make it the innermost context of the run: Python runs the signal's own handler at the next
    Python frame after the run returns, which is this context's exit; an outer context's exit (one
    that restores a file descriptor) then still runs in full.
    """
    _install()
    options = ort.RunOptions()
    with _lock:
        _active.add(options)
    try:
        yield options
    except Exception:
        if options.terminate:
            raise KeyboardInterrupt from None
        raise
    finally:
        with _lock:
            _active.discard(options)
