"""Writing outputs: files (or folders) that appear only when complete.

Every output goes through :func:`stage_beside`: a temp name in the target's folder, renamed onto the
target only when complete, so a failed or interrupted run leaves the old output as it was and no
debris. Staged outputs get the permissions the umask gives (0644/0755 under umask 022), as a file
made by ``open()`` would. A target that is a folder (for a file output), a symbolic link or a
special file is refused before any work: replacing it would lose what audiotok did not write.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import AudiotokError, os_error_line

STAGE_ATTEMPTS = 100  # random temp names tried before giving up (each collision is 1 in 2**64)
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
STAGE_SUFFIX = ".tmp"  # every staged name is `.NAME.<16 hex>.tmp`, or `.audiotok-<16 hex>.<16 hex>.tmp`

# Staged outputs of this process not yet renamed into place (path -> is a folder). A path is entered
# before it is created, so a Ctrl-C that lands between its creation and its writer's own cleanup
# block still finds it: the CLI's interrupt handler calls remove_unfinished().
_unfinished: dict[Path, bool] = {}


class OutputError(AudiotokError):
    """An output that cannot be written, or whose target holds something audiotok did not write."""


@contextmanager
def writing(target: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError in the block (a full disk, an I/O error, a read-only or vanished folder) into an
    OutputError naming ``target`` and the OS's reason: one line, and the writer's abort still runs."""
    try:
        yield
    except BrokenPipeError:
        raise  # stdout read by `| head`: the dispatcher's rule (exit 0), not a failed write
    except OSError as exc:
        raise OutputError(os_error_line(exc, target)) from None


def close_quietly(stream) -> None:
    """Close a stream a failed run is discarding: a flush that fails again (the disk is still full)
    must not hide the first error, and the file is closed either way."""
    try:
        stream.close()
    except OSError:
        pass


AUDIO_MAGIC = ((0, b"RIFF", 8, b"WAVE", "WAV"), (0, b"RF64", 8, b"WAVE", "WAV"), (0, b"OggS", 0, b"", "Ogg"),
               (0, b"fLaC", 0, b"", "FLAC"), (0, b"ID3", 0, b"", "MP3"), (0, b"FORM", 8, b"AIFF", "AIFF"),
               (0, b"FORM", 8, b"AIFC", "AIFF"), (0, b"caff", 0, b"", "CAF"), (4, b"ftypM4A", 0, b"", "M4A"))


def audio_kind(path: Path) -> str | None:
    """"WAV", "Ogg", "FLAC", ... when the file at ``path`` starts as that audio container does, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for at, magic, at2, magic2, name in AUDIO_MAGIC:
        if head[at:at + len(magic)] == magic and head[at2:at2 + len(magic2)] == magic2:
            return name
    return None


def check_target(target: str | os.PathLike, *, folder: bool = False) -> Path:
    """Refuse a target that a staged output must not replace; returns it as a Path.

    A file output may replace a regular file (that is what ``-o`` means), never a folder, a link or
    a device, and never a recording: audiotok writes no audio, so an output onto one (``-o take2.wav``,
    ``--centroids clip.ogg``) is a slip that would destroy it. A folder output's own checks (what it
    may replace) belong to its writer.
    """
    target = Path(target)
    if str(target) in ("", ".", "..") or target.name in ("", ".", ".."):
        raise OutputError(f"-o {target}: give a {'folder' if folder else 'file'} name, not {str(target) or '.'!r}")
    try:
        info = target.lstat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"-o {target}: {exc.strerror}") from None
    if info is not None and not folder:
        if stat.S_ISDIR(info.st_mode) or (stat.S_ISLNK(info.st_mode) and target.is_dir()):
            raise OutputError(f"-o {target}: is a folder; give a file name")
        if stat.S_ISLNK(info.st_mode):
            raise OutputError(f"-o {target}: is a symbolic link, which would be replaced; give the real path")
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"-o {target}: exists and is not a regular file; give another name")
        kind = audio_kind(target)
        if kind is not None:
            raise OutputError(f"-o {target}: is {kind} audio, and audiotok writes no audio, so this would destroy "
                              f"a recording; nothing was changed: give another name")
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"-o {target}: {parent} is not a folder")
    return target


def staged_name(target: Path, tag: str) -> str:
    """The hidden name a staged copy of ``target`` gets: ``.NAME.TAG.tmp``, or, when that would not fit
    in NAME_MAX bytes (a legal target name near the limit), ``.audiotok-HASH.TAG.tmp`` with HASH from
    the target's name. Either form marks the file as audiotok's staging; this is the one place that
    names temps, so cleanup code can recognise them.
    """
    readable = f".{target.name}.{tag}{STAGE_SUFFIX}"
    if len(os.fsencode(readable)) <= NAME_MAX:
        return readable
    return f".audiotok-{_name_digest(target)}.{tag}{STAGE_SUFFIX}"


def staged_name_pattern(target: Path, tag: str) -> re.Pattern[str]:
    """Matches every name :func:`staged_name` gives ``target`` for a tag matching the regex ``tag``
    (both the readable and the hashed form), so cleanup recognises exactly audiotok's own temps."""
    prefixes = (re.escape(f".{target.name}."), re.escape(f".audiotok-{_name_digest(target)}."))
    return re.compile(f"(?:{'|'.join(prefixes)})(?:{tag}){re.escape(STAGE_SUFFIX)}")


def _name_digest(target: Path) -> str:
    return hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16]


def stage_beside(target: Path, *, folder: bool = False) -> Path:
    """A new temp file (or folder) in ``target``'s folder, so renaming it onto ``target`` is atomic.

    Made with ``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)`` so the umask decides its permissions
    (``mkstemp``/``mkdtemp`` would make every output 0600/0700).
    """
    target = check_target(target, folder=folder)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(STAGE_ATTEMPTS):
            tmp = target.parent / staged_name(target, secrets.token_hex(8))
            _unfinished[tmp] = folder
            try:
                if folder:
                    os.mkdir(tmp, 0o777)
                else:
                    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                return tmp
            except FileExistsError:
                del _unfinished[tmp]  # not ours
                continue
            except OSError:
                del _unfinished[tmp]  # never created
                raise
    except OSError as exc:
        raise OutputError(f"-o {target}: cannot write in {target.parent} ({exc.strerror})") from None
    raise OutputError(f"-o {target}: no free temp name in {target.parent}")


def replace_into(staged: Path, target: Path) -> None:
    """Rename a complete staged output onto ``target`` (one line, not a traceback, if the OS refuses)."""
    try:
        os.replace(staged, target)
    except OSError as exc:
        raise OutputError(f"-o {target}: cannot replace it ({exc.strerror})") from None
    _unfinished.pop(staged, None)


def remove_unfinished() -> None:
    """Remove every staged output of this process that was never renamed into place.

    Writers remove their own staging when they fail; this is the last sweep of an interrupted run,
    for a signal that landed before a writer's cleanup block was set up. Only paths
    :func:`stage_beside` created are touched (a writer's finished or removed ones are skipped).
    """
    for path, folder in list(_unfinished.items()):
        try:
            if folder:
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
    _unfinished.clear()


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``target``; it replaces ``target`` only if the block succeeds.

    On any error (KeyboardInterrupt included) the temp file is removed, so an existing output is
    never replaced by a partial one and no debris is left; an OSError in the block (a full disk) is an
    OutputError naming ``target``.
    """
    target = Path(target)
    tmp = stage_beside(target)
    try:
        with writing(target):
            yield tmp
        replace_into(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
