"""The one interface every unit output implements, whatever its format.

``write(path, units, offset)`` once per audio file, then ``close()`` to commit or ``abort()`` when
the run fails. Used as a context manager, a writer commits if the block succeeds and aborts if it
raises. What abort keeps depends on the format's promise: a staged file or folder is discarded (the
old output stays as it was), a resumable jsonl keeps every record already written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class UnitWriter(ABC):
    """One audio file's units per ``write``; ``close`` commits, ``abort`` ends a failed run."""

    @abstractmethod
    def write(self, path: str, units: np.ndarray, offset: int | None = None) -> None:
        """Add one file's units; ``offset`` is where a trimmed file's first kept frame starts (samples)."""

    @abstractmethod
    def close(self) -> None:
        """Commit: the output is complete and in place when this returns."""

    @abstractmethod
    def abort(self) -> None:
        """End a failed or interrupted run, leaving only what the format promises to keep.

        May run after a failed ``close`` and must not raise on what it discards."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()  # a commit that failed half way (a full disk) leaves what a failed run leaves
                raise
        else:
            self.abort()
