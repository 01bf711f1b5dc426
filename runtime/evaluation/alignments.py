"""Phone alignments for `audiotok evaluate`: Praat TextGrids (MFA's output) or one TSV of segments.

Two sources, both matched to audio files:

* a folder searched recursively for ``*.TextGrid`` (one per audio file, matched by stem, the way
  Montreal Forced Aligner names its output), or a single TextGrid file; read with praatio, which
  reads the long and short forms in UTF-8 and UTF-16. The tier is ``phones`` unless told otherwise.
* a ``.tsv`` of ``path<TAB>start_s<TAB>end_s<TAB>label`` lines, matched by path as written, as an
  absolute path, or by stem. It is read line by line and only rows of the files being evaluated are
  kept, so a corpus-wide file costs memory only for the audio at hand.

Alignment files are untrusted: every time must be a finite number, intervals must not overlap and
must lie within the audio; a bad file is one line naming it and the problem. Empty labels (MFA's
silences) are gaps: frames there get no label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from praatio import textgrid as praat_textgrid

from ..constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from ..errors import AudiotokError

DEFAULT_TIER = "phones"  # Montreal Forced Aligner's phone tier
TEXTGRID_SUFFIX = ".textgrid"  # compared lower-case: MFA writes .TextGrid
TSV_SUFFIXES = (".tsv", ".txt")
MAX_TEXTGRID_BYTES = 64 * 1024 * 1024  # a TextGrid is one utterance; anything larger is not a real one
MAX_TSV_LINE = 64 * 1024  # characters: a path, two times and a label
DURATION_TOLERANCE_S = 0.02  # one frame: aligners round times, resampling may move the end by a sample
OVERLAP_TOLERANCE_S = 1e-6  # times printed with 6+ decimals may touch with rounding noise
NO_LABEL = -1  # a frame outside every labelled interval


class AlignmentError(AudiotokError):
    """An alignment file that cannot be used."""


@dataclass(frozen=True)
class Segments:
    """One file's labelled intervals, sorted by start: [starts[i], ends[i]) carries labels[i]."""

    starts: np.ndarray  # float64 seconds
    ends: np.ndarray
    labels: tuple[str, ...]
    source: str  # the file they came from, for messages

    @classmethod
    def build(cls, rows: Iterable[tuple[float, float, str]], source: str) -> Segments:
        """Sort, drop empty labels, and refuse reversed or overlapping intervals."""
        kept = sorted((a, b, lab.strip()) for a, b, lab in rows if lab.strip())
        for a, b, label in kept:
            if not (math.isfinite(a) and math.isfinite(b)) or b < a or a < 0:
                raise AlignmentError(f"{source}: interval {label!r} at {a:g}-{b:g} s is not a valid time span")
        for (a0, b0, l0), (a1, b1, l1) in zip(kept, kept[1:]):
            if a1 < b0 - OVERLAP_TOLERANCE_S:
                raise AlignmentError(f"{source}: overlapping intervals {l0!r} {a0:g}-{b0:g} s and "
                                     f"{l1!r} {a1:g}-{b1:g} s")
        return cls(np.array([r[0] for r in kept], np.float64), np.array([r[1] for r in kept], np.float64),
                   tuple(r[2] for r in kept), source)

    def check_duration(self, duration: float, audio: str) -> None:
        """Refuse labels past the end of the audio: the alignment is for another recording."""
        if len(self.ends) and self.ends[-1] > duration + DURATION_TOLERANCE_S:
            raise AlignmentError(f"{self.source}: label {self.labels[-1]!r} ends at {self.ends[-1]:g} s, past the "
                                 f"end of {audio} ({duration:.3f} s)")

    def frame_labels(self, n_frames: int) -> list[str | None]:
        """The label at each frame's centre (sample 320 i + 200 at 16 kHz), None where unlabelled."""
        centres = (np.arange(n_frames) * HOP_SAMPLES + RECEPTIVE_FIELD_SAMPLES // 2) / SAMPLE_RATE
        if not self.labels:
            return [None] * n_frames
        index = np.searchsorted(self.starts, centres, side="right") - 1
        inside = (index >= 0) & (centres < self.ends[np.clip(index, 0, None)])
        return [self.labels[i] if ok else None for i, ok in zip(index.tolist(), inside.tolist())]


# --- TextGrid -----------------------------------------------------------------------------------

def read_textgrid(path: Path, tier: str = DEFAULT_TIER) -> Segments:
    """The intervals of ``tier`` in a TextGrid file (long or short form, UTF-8 or UTF-16)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AlignmentError(f"{path}: cannot read ({exc.strerror})") from None
    if size > MAX_TEXTGRID_BYTES:
        raise AlignmentError(f"{path}: {size / 2**20:.0f} MiB is too large for one utterance's TextGrid")
    try:
        grid = praat_textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    except Exception as exc:  # praatio raises many types (its own, ValueError, IndexError, ...) on bad input
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise AlignmentError(f"{path}: not a TextGrid that can be read ({reason})") from None
    if tier not in grid.tierNames:
        names = ", ".join(repr(n) for n in grid.tierNames) or "none"
        raise AlignmentError(f"{path}: no tier {tier!r} (tiers: {names}); choose one with --tier")
    found = grid.getTier(tier)
    if not isinstance(found, praat_textgrid.IntervalTier):
        raise AlignmentError(f"{path}: tier {tier!r} is a point tier; phone labels need an interval tier")
    return Segments.build(((e.start, e.end, e.label) for e in found.entries), str(path))


def textgrids_by_stem(root: Path) -> dict[str, list[Path]]:
    """TextGrid files under ``root`` (or ``root`` itself), by stem."""
    found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() == TEXTGRID_SUFFIX
                                                  and p.is_file())
    by_stem: dict[str, list[Path]] = {}
    for p in found:
        by_stem.setdefault(p.stem, []).append(p)
    return by_stem


# --- TSV ----------------------------------------------------------------------------------------

def _audio_keys(audio: str) -> list[str]:
    """Ways a TSV may name an audio file: as given, as an absolute path, by stem."""
    return [audio, str(Path(audio).absolute()), Path(audio).stem]


def _parse_tsv_line(line: str, where: str) -> tuple[str, float, float, str]:
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 4 or not fields[0]:
        raise AlignmentError(f"{where}: expected 'path<TAB>start_s<TAB>end_s<TAB>label', got {line.strip()[:80]!r}")
    try:
        start, end = float(fields[1]), float(fields[2])
    except ValueError:
        raise AlignmentError(f"{where}: start and end must be seconds, got {fields[1][:20]!r} and "
                             f"{fields[2][:20]!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise AlignmentError(f"{where}: start and end must be finite seconds")
    return fields[0], start, end, fields[3]


def read_tsv(path: Path, audio_files: list[str]) -> dict[str, Segments]:
    """Segments of ``audio_files`` found in a TSV (other rows are checked, then dropped)."""
    owners: dict[str, str | None] = {}  # TSV key -> audio file (None: a stem shared by two audio files)
    for audio in audio_files:
        for key in _audio_keys(audio):
            owners[key] = audio if owners.get(key, audio) == audio else None
    rows: dict[str, list[tuple[float, float, str]]] = {}
    names: dict[str, str] = {}  # audio -> the TSV path that matched it, to refuse two different ones
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is not part of a path
            for number, line in enumerate(iter(lambda: f.readline(MAX_TSV_LINE + 1), ""), start=1):
                if len(line) > MAX_TSV_LINE:
                    raise AlignmentError(f"{path}:{number}: line longer than {MAX_TSV_LINE} characters")
                if not line.strip() or (number == 1 and line.lower().startswith("path\t")):
                    continue
                name, start, end, label = _parse_tsv_line(line, f"{path}:{number}")
                audio = next((owners[k] for k in (name, str(Path(name).absolute()), Path(name).stem)
                              if owners.get(k)), None)
                if audio is None:
                    continue
                if names.setdefault(audio, name) != name:
                    raise AlignmentError(f"{path}:{number}: {name!r} and {names[audio]!r} both match {audio}")
                rows.setdefault(audio, []).append((start, end, label))
    except (OSError, UnicodeDecodeError) as exc:
        raise AlignmentError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    return {audio: Segments.build(r, f"{path} ({names[audio]})") for audio, r in rows.items()}


# --- both ---------------------------------------------------------------------------------------

class Alignments:
    """Finds each audio file's segments; ``get`` returns None for a file without alignment."""

    def __init__(self, path: str, audio_files: list[str], tier: str = DEFAULT_TIER) -> None:
        self.root = Path(path)
        self.tier = tier
        if not self.root.exists():
            raise AlignmentError(f"{path}: no such alignment file or folder")
        self.is_tsv = self.root.is_file() and self.root.suffix.lower() in TSV_SUFFIXES
        if self.root.is_file() and not self.is_tsv and self.root.suffix.lower() != TEXTGRID_SUFFIX:
            raise AlignmentError(f"{path}: alignments are a folder of TextGrids, a .TextGrid or a .tsv of segments")
        self._tsv = read_tsv(self.root, audio_files) if self.is_tsv else {}
        self._grids = {} if self.is_tsv else textgrids_by_stem(self.root)

    def get(self, audio: str) -> Segments | None:
        if self.is_tsv:
            return self._tsv.get(audio)
        candidates = self._grids.get(Path(audio).stem, [])
        if len(candidates) > 1:
            raise AlignmentError(f"{self.root}: {len(candidates)} TextGrids named {Path(audio).stem!r} "
                                 f"({candidates[0]}, {candidates[1]}); cannot tell which is {audio}'s")
        return read_textgrid(candidates[0], self.tier) if candidates else None
