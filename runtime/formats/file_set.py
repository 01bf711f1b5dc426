"""An output of several files that becomes visible as one, and the leftovers of one that was killed.

train writes centroids, their sidecar, a usage plot and maybe a faiss index. Written one after
the other, an interrupt between them leaves new centroids beside the previous run's sidecar, and
export would then build a bundle with the old processor options. A :class:`FileSet` stages every
file first (nothing visible changes), then renames them into place in the order they were added,
keeping a hard link to each file it replaces. If the renames are interrupted by anything Python
sees (Ctrl-C, SIGTERM turned into an exception, an OSError), the previous files are put back and
the new ones removed: the set is the old one or the new one, never a mix.

Only SIGKILL or a power cut can stop it between two renames. For that the caller orders the files
so a reader can tell: train renames its sidecar last, and the sidecar records the centroids'
sha256, so export refuses a pair whose hash does not match. What such a run leaves behind (staged
``.NAME.<16 hex>.tmp`` files and ``.NAME.old-<16 hex>.tmp`` links) is recognised by that name and by
content audiotok writes, and :func:`remove_leftovers` deletes it at the start of the next run.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import os_error_line
from .side_files import read_head
from .staging import STAGE_ATTEMPTS, OutputError, replace_into, stage_beside, staged_name, staged_name_pattern

Recogniser = Callable[[bytes], bool]  # a file's first bytes -> whether audiotok wrote it


class FileSet:
    """``stage(target)`` each file and write it; the ``with`` block's end renames them all in order.

    An error before or during the renames leaves every target as it was before the run.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (staged temp file, target)

    def stage(self, target: str | os.PathLike) -> Path:
        """A fresh temp file beside ``target`` (see :func:`~.staging.stage_beside`) to write the file into."""
        tmp = stage_beside(Path(target))
        self._staged.append((tmp, Path(target)))
        return tmp

    def __enter__(self) -> FileSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        writing_to = self._staged[-1][1] if self._staged else None  # the file being written when it failed
        self.discard()
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError) and writing_to is not None:
            # a full disk or an I/O error while writing one of the set: one line naming that file, as
            # atomic_path's writing() does for a single output
            raise OutputError(os_error_line(exc, writing_to)) from None

    def commit(self) -> None:
        """Rename every staged file onto its target, in order; on any error, restore the previous set."""
        done: list[tuple[Path, bool, Path | None]] = []  # (target, existed, hard link to what it replaced)
        try:
            for tmp, target in self._staged:
                existed = os.path.lexists(target)
                backup = _link_aside(target) if existed else None
                done.append((target, existed, backup))
                replace_into(tmp, target)
        except BaseException:
            for target, existed, backup in reversed(done):
                if backup is not None and _same_file(backup, target):
                    backup.unlink()  # not replaced yet (rename() of two links to one file does nothing)
                elif backup is not None:
                    os.replace(backup, target)  # the previous file, back under its name
                elif not existed:
                    target.unlink(missing_ok=True)  # new this run: audiotok wrote it
                # else: no hard links here; the caller's order keeps the set verifiable (module docstring)
            self.discard()
            raise
        for _, _, backup in done:
            if backup is not None:
                backup.unlink(missing_ok=True)
        self._staged = []

    def discard(self) -> None:
        """Remove every staged file not yet renamed (all of them before :meth:`commit`)."""
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged = []


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except OSError:
        return False


def _link_aside(target: Path) -> Path | None:
    """A hard link ``.NAME.old-<16 hex>.tmp`` to ``target``'s current file; None where the file system has no
    hard links (the set is then only as safe as its order)."""
    for _ in range(STAGE_ATTEMPTS):
        backup = target.parent / staged_name(target, f"old-{secrets.token_hex(8)}")
        try:
            os.link(target, backup, follow_symlinks=False)
            return backup
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                return None
            raise OutputError(f"-o {target}: cannot keep the previous file while replacing it "
                              f"({exc.strerror})") from None
    raise OutputError(f"-o {target}: no free temp name in {target.parent}")


def leftover_pattern(target: Path) -> re.Pattern[str]:
    """The names a staged file or a kept previous file of ``target`` has (see :mod:`.staging`)."""
    return staged_name_pattern(target, r"(?:old-)?[0-9a-f]{16}")


def remove_leftovers(target: str | os.PathLike, is_ours: Recogniser) -> list[Path]:
    """Delete what a killed run left beside ``target``: regular files with a leftover name whose
    content ``is_ours`` recognises (an empty staged file counts: staging creates it empty). Returns them.

    Anything else of a similar name (a link, a folder, a file audiotok would not write) is kept.
    """
    target = Path(target)
    pattern = leftover_pattern(target)
    try:
        names = [n for n in os.listdir(target.parent or ".") if pattern.fullmatch(n)]
    except OSError:
        return []
    removed = []
    for name in names:
        path = target.parent / name
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        head = read_head(path)
        try:
            ours = info.st_size == 0 or is_ours(head)
        except (ValueError, TypeError, RecursionError):
            ours = False
        if ours:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue  # best effort: a leftover that cannot be removed stays, harmless
            removed.append(path)
    return removed
