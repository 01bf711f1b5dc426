"""The work behind `audiotok evaluate`: one pass over the files, every measure accumulated on the way.

Each file is decoded once to 16 kHz and tokenized once; the same samples then feed the alignment
table, the other bundle or the stream, and every perturbation. Nothing is printed here: the
command turns the :class:`Report` into a table or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audio.decode import file_blocks
from ..constants import SAMPLE_RATE
from ..errors import AudioError, SettingsError
from ..audio.preprocess import Preprocess, prepared_blocks
from ..stream import StreamSettings
from ..tokenizer import Tokenizer
from .alignments import Alignments
from .perturb import NoiseBank, Perturbation, apply, seeded_rng
from .phone_metrics import AlignmentScores, PhoneUnitCounts
from .unit_compare import NOTHING, Comparison, compare
from .unit_stats import UnitCounter, UnitStats

STREAM_BLOCK_SAMPLES = 1_600  # 100 ms: audio reaches the stream in blocks as from a device


@dataclass(frozen=True)
class EvaluationPlan:
    """What to measure besides the vocabulary statistics."""

    alignments: Alignments | None = None
    against: Tokenizer | None = None
    stream: StreamSettings | None = None  # compare streamed units with offline ones
    perturbations: tuple[Perturbation, ...] = ()
    noise: NoiseBank | None = None
    seed: int = 0

    @property
    def comparison_name(self) -> str | None:
        if self.against is not None:
            return str(self.against.path)
        if self.stream is not None:
            s = self.stream
            return f"stream {s.chunk_ms:g}:{s.lookahead_ms:g}:{s.context_ms:g}"
        return None


@dataclass
class Report:
    bundle: Tokenizer
    plan: EvaluationPlan
    files: int = 0
    seconds: float = 0.0
    counter: UnitCounter | None = None
    phones: PhoneUnitCounts | None = None
    aligned: int = 0
    unaligned: list[str] = field(default_factory=list)
    comparison: Comparison = NOTHING
    per_file: list[tuple[str, Comparison]] = field(default_factory=list)
    stability: dict[str, Comparison] = field(default_factory=dict)

    @property
    def stats(self) -> UnitStats:
        return self.counter.stats()

    @property
    def alignment(self) -> AlignmentScores | None:
        return self.phones.scores() if self.plan.alignments is not None else None


def check_comparable(bundle: Tokenizer, other: Tokenizer) -> str | None:
    """Refuse a bundle whose units cannot be set against ``bundle``'s; a warning line if they may differ."""
    a, b = bundle.manifest, other.manifest
    grid_a, grid_b = (a.sample_rate, a.hop, a.receptive_field), (b.sample_rate, b.hop, b.receptive_field)
    if grid_a != grid_b:
        raise SettingsError(f"{other.path}: frame grid (rate, hop, field) {grid_b} differs from "
                            f"{bundle.path}'s {grid_a}")
    if a.k != b.k:
        raise SettingsError(f"{other.path}: k={b.k} but {bundle.path} has k={a.k}; units of different "
                            "vocabularies cannot be compared frame by frame")
    if a.centroids_sha256 != b.centroids_sha256:
        return (f"{other.path}: its centroids differ from {bundle.path}'s; agreement and UED compare unit ids "
                "of two different vocabularies")
    return None


def load_16k(path: str, pre: Preprocess) -> np.ndarray:
    """The file as the bundle's tokenizer sees it: its channel, trimmed and padded as it would be."""
    _, prepared = prepared_blocks(lambda: file_blocks(path, channel=pre.channel), pre)
    blocks = [b for b in prepared if len(b)]
    if not blocks:
        raise AudioError(f"{path}: empty audio (no samples)")
    return np.concatenate(blocks)


def streamed_units(tokenizer: Tokenizer, settings: StreamSettings, samples: np.ndarray) -> np.ndarray:
    """Units of 16 kHz ``samples`` fed through a real :class:`Stream` in 100 ms blocks."""
    stream = tokenizer.stream(chunk_ms=settings.chunk_ms, lookahead_ms=settings.lookahead_ms,
                              context_ms=settings.context_ms, sample_rate=SAMPLE_RATE)
    pieces = [c.units for start in range(0, len(samples), STREAM_BLOCK_SAMPLES)
              for c in stream.accept(samples[start:start + STREAM_BLOCK_SAMPLES])]
    pieces += [c.units for c in stream.flush()]
    return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)


def _units(tokenizer: Tokenizer, samples: np.ndarray, source: str) -> np.ndarray:
    """Offline units; none for no samples (a shift longer than the file), as for under 400 samples."""
    if not len(samples):
        return np.zeros(0, np.int64)
    return tokenizer.tokenize_blocks(iter([samples]), source=source)


class Evaluator:
    """Feeds files one at a time (:meth:`add`) into a :class:`Report`."""

    def __init__(self, bundle: Tokenizer, plan: EvaluationPlan) -> None:
        self.bundle, self.plan = bundle, plan
        k = bundle.manifest.k
        self.report = Report(bundle, plan, counter=UnitCounter(k), phones=PhoneUnitCounts(k))

    def add(self, path: str) -> float:
        """Evaluate one file; returns its duration in seconds."""
        samples = load_16k(path, self.bundle.preprocess)
        units = _units(self.bundle, samples, path)
        r = self.report
        r.files += 1
        r.seconds += len(samples) / SAMPLE_RATE
        r.counter.add(units)
        self._align(path, samples, units)
        self._compare(path, samples, units)
        for p in self.plan.perturbations:
            perturbed = apply(p, samples, seeded_rng(self.plan.seed, path, p), self.plan.noise)
            result = compare(units, _units(self.bundle, perturbed, f"{path} ({p.name})"), offset=p.frame_offset)
            r.stability[p.name] = r.stability.get(p.name, NOTHING) + result
        return len(samples) / SAMPLE_RATE

    def _align(self, path: str, samples: np.ndarray, units: np.ndarray) -> None:
        if self.plan.alignments is None:
            return
        segments = self.plan.alignments.get(path)
        if segments is None:
            self.report.unaligned.append(path)
            return
        segments.check_duration(len(samples) / SAMPLE_RATE, path)
        self.report.phones.add(segments.frame_labels(len(units)), units)
        self.report.aligned += 1

    def _compare(self, path: str, samples: np.ndarray, units: np.ndarray) -> None:
        if self.plan.against is not None:
            other = _units(self.plan.against, samples, path)
        elif self.plan.stream is not None:
            other = streamed_units(self.bundle, self.plan.stream, samples)
        else:
            return
        result = compare(units, other)
        self.report.comparison = self.report.comparison + result
        self.report.per_file.append((path, result))

