"""What to process: audio files named directly, found in folders, or listed in file lists.

A corpus is given as any mix of

* audio files (``a.wav``),
* folders, searched recursively for audio extensions in sorted order (``librispeech/``),
* ``@list.tsv``: a file list in fairseq's manifest layout, whose first line is a root folder and
  every further line ``relative/path.flac<TAB>n_samples`` (the sample count may be missing).
  ("Manifest" in audiotok means a bundle's metadata; these are called file lists here.)

Paths named on the command line must exist (a typo is a usage error, reported before any work).
Files named in a file list are not checked here: a stale entry is a per-file error found when that
file is read, so a 100k-line list costs no up-front stat calls and one bad line costs one file.
The same holds for pipes, devices and sockets, wherever they are named: each is refused when it is
read (never opened: a FIFO would block), as one file's error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..audio.decode import AUDIO_EXTENSIONS
from ..errors import AudioError
from ..audio.file_kind import require_regular_file

FILE_LIST_PREFIX = "@"
MAX_LINE_CHARS = 1 << 16  # one path and its sample count; PATH_MAX is 4096


@dataclass(frozen=True)
class CorpusFile:
    """One input file. ``path`` is the string written into records and matched on resume."""

    path: str
    n_samples: int | None = None  # from a file list, at the file's own rate; None when unknown


def _list_lines(source: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a file list, read line by line; a line over MAX_LINE_CHARS is an error.

    A list may hold a million files, but no path is megabytes long: a longer line is refused before it is
    held whole, so a stranger's list cannot make a run allocate more than one line's bound at a time.
    """
    try:
        with open(source, encoding="utf-8", newline=None) as f:
            number = 0
            while True:
                line = f.readline(MAX_LINE_CHARS + 1)
                if not line:
                    return
                number += 1
                if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                    raise AudioError(f"{FILE_LIST_PREFIX}{source}:{number}: a line of more than {MAX_LINE_CHARS} "
                                     "characters; a file list holds one path (and sample count) per line")
                yield number, line.rstrip("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise AudioError(f"{FILE_LIST_PREFIX}{source}: cannot read the file list ({exc})") from None


def read_file_list(file_list: str | Path) -> list[CorpusFile]:
    """Files of a file list (fairseq manifest layout): root folder on line 1, then ``relative_path<TAB>n_samples``."""
    source = require_regular_file(file_list, AudioError, what="a file list", shown=f"{FILE_LIST_PREFIX}{file_list}",
                                  missing="no such file list")  # a FIFO would block the read
    lines = _list_lines(source)
    first = next(lines, (1, ""))[1]
    if not first.strip():
        raise AudioError(f"{FILE_LIST_PREFIX}{source}: empty file list (line 1 must be the root folder)")
    root = Path(first.strip())
    if not root.is_absolute():  # fairseq writes absolute roots; a relative one is read beside the list
        root = source.parent / root
    files = []
    for number, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2 or not fields[0].strip():
            raise AudioError(f"{FILE_LIST_PREFIX}{source}:{number}: expected 'relative_path<TAB>n_samples', "
                             f"got {line[:80]!r}")
        n_samples = None
        if len(fields) == 2 and fields[1].strip():
            text = fields[1].strip()
            if not (text.isascii() and text.isdigit() and len(text) <= 18):
                raise AudioError(f"{FILE_LIST_PREFIX}{source}:{number}: sample count {fields[1]!r} "
                                 "is not a non-negative integer") from None
            n_samples = int(text)
        files.append(CorpusFile(str(root / fields[0]), n_samples))
    return files


def folder_files(folder: Path) -> list[CorpusFile]:
    """Audio files under ``folder``, recursively, by extension, in sorted order.

    Anything but a folder with an audio extension is listed, pipes and devices included, so that it
    is reported (as that file's error) rather than silently left out.
    """
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and not p.is_dir())
    return [CorpusFile(str(p)) for p in found]


def list_corpus(inputs: list[str]) -> list[CorpusFile]:
    """Expand files, folders and ``@file lists`` into one list, keeping the first of any duplicate path."""
    found: list[CorpusFile] = []
    for raw in inputs:
        if raw.startswith(FILE_LIST_PREFIX) and not Path(raw).exists():
            found.extend(read_file_list(raw[len(FILE_LIST_PREFIX):]))
            continue
        p = Path(raw)
        if p.is_dir():
            found.extend(folder_files(p))
        elif p.exists():
            found.append(CorpusFile(raw))
        else:
            raise AudioError(f"{p}: no such file or folder")
    seen: set[str] = set()
    unique = []
    for item in found:
        key = str(Path(item.path).absolute())
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique
