"""Locks on outputs: one run at a time writes a resumable output or swaps a folder into place.

``flock`` locks belong to an open file and vanish with the process however it ends (SIGKILL
included), so no stale lock can block a later run and no lock file is left behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .staging import OutputError, check_target, replace_into

try:
    import fcntl
except ImportError:  # not POSIX: outputs are not locked
    fcntl = None


class OutputLock:
    """An exclusive ``flock`` on an output file, so two runs never write one output at once.

    The lock lives on the output file itself (created empty if missing): no lock file is left
    behind, and the OS releases it when the process ends, however it ends. A second run refuses at
    once instead of waiting: interleaved records are silent corruption, a refusal is not.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = False
        self._fd: int | None = None
        check_target(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._acquire()
        except OSError as exc:
            raise OutputError(f"-o {path}: cannot open it ({exc.strerror})") from None

    def _acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK, 0o666)
                created = True
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
                created = False
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OutputError(f"-o {self.path}: exists and is not a regular file; give another name")
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise OutputError(f"{self.path}: another audiotok run is writing it (it holds the lock); "
                                      "wait for it to finish, or choose another -o") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:  # else the run that held it removed the file meanwhile: lock the new one
                self._fd, self.created = fd, created
                return
            os.close(fd)

    def replace_with(self, staged: Path) -> None:
        """Rename ``staged`` onto the locked file, locking it first, so the lock moves with the name.

        A run that opens the name after the rename finds the new file already locked; one that opened
        the old file finds it locked until this returns, then sees it is no longer the file at the name.
        """
        fd = os.open(staged, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh staged file: nobody else holds it
            replace_into(staged, self.path)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd

    def release(self, *, remove: bool = False) -> None:
        """Unlock; ``remove`` deletes the file first (only ever one this lock created and left empty)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``path`` (a file or folder), or None when
    another process holds it. The lock lasts until the descriptor is closed or the process ends."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class FolderLock:
    """An exclusive ``flock`` on a folder, held briefly (the swap of a units folder into place)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        if fcntl is None:
            return self
        self._fd = os.open(self.folder, os.O_RDONLY)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
