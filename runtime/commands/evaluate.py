"""Measure how good and how stable a bundle's units are, on your own audio.

Always: vocabulary statistics (units used of k, entropy, perplexity, bitrate before and after
deduplication, mean run length). With --alignments: PNMI, phone purity and cluster purity against
phone alignments (a frame's phone is the one at its centre, sample 320 i + 200). With --against:
frame agreement and unit edit distance (UED) between this bundle's units and another's (fp32 vs
int8); with --stream, between its streamed units and its offline ones. With --perturb: UED between
units of clean and perturbed audio, one row per spec.

UED = Levenshtein distance between the deduplicated unit sequences / length of the clean one
(Gat et al. 2022). Perturbations are seeded (--seed): the same command gives the same numbers.

Alignments: a folder of Praat TextGrids (Montreal Forced Aligner's output, one per audio file,
matched by stem; tier --tier), one .TextGrid, or a .tsv of `path<TAB>start_s<TAB>end_s<TAB>label`.
Files without an alignment are listed and left out of the alignment scores.

Perturbations (--perturb, repeatable):
  noise:SNR_DB      white noise (with --noise-dir also a recorded-noise row: noise:SNR_DB:recorded)
  speed:FACTOR      faster (>1) or slower (<1), 0.5-2, resampled with soxr
  gain:DB           louder or quieter
  shift:SAMPLES     drop the first SAMPLES samples (a sub-frame time shift: 160 is half a frame)
  reverb:RT60_S     a synthetic room with that reverberation time

Examples:
  audiotok evaluate units.onnx speech/
  audiotok evaluate hubert6-500.onnx LibriSpeech/dev-clean --alignments mfa-dev-clean/ --confusion confusion.png
  audiotok evaluate units.onnx @dev.tsv --alignments phones.tsv --json -o report.json
  audiotok evaluate units.onnx speech/ --against units-int8.onnx
  audiotok evaluate units.onnx speech/ --stream 640:80:640
  audiotok evaluate units.onnx speech/ --perturb noise:20 --perturb noise:10 --perturb speed:0.9 --perturb shift:160
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from ..corpus.listing import list_corpus
from ..corpus.progress import CorpusProgress
from ..errors import SettingsError
from ..evaluation.alignments import DEFAULT_TIER, Alignments
from ..evaluation.measure import EvaluationPlan, Evaluator, Report, check_comparable
from ..evaluation.perturb import NoiseBank, expand
from ..formats.collisions import Place, check_apart, input_places, list_arguments
from ..formats.staging import atomic_path
from ..plotting.canvas import PlotUnavailable, image_format
from ..stream import StreamSettings
from ..tokenizer import Tokenizer
from .numbers import SEED_MAX, integer, threads
from .options import add_processor_arguments, add_provider_argument, processor_arguments
from .stream import _HelpFormatter as HelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter  # defaults shown only where there is one
    parser.add_argument("bundle", help="an audiotok .onnx bundle")
    parser.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files, folders, or @list.tsv (a file list)")
    parser.add_argument("--alignments", metavar="PATH", default=None,
                        help="phone alignments: folder of TextGrids, a .TextGrid, or a .tsv of segments")
    parser.add_argument("--tier", default=DEFAULT_TIER, help="TextGrid tier holding the phones")
    parser.add_argument("--against", metavar="OTHER.onnx", default=None,
                        help="compare with another bundle of the same vocabulary (e.g. its int8 export)")
    parser.add_argument("--stream", metavar="C:L:X", default=None,
                        help="compare streamed units (chunk:lookahead:context ms, e.g. 640:80:640, or 'default') "
                             "with offline ones")
    parser.add_argument("--perturb", metavar="SPEC", action="append", default=None,
                        help="measure UED under a perturbation (repeatable): noise:DB, speed:F, gain:DB, "
                             "shift:SAMPLES, reverb:RT60")
    parser.add_argument("--noise-dir", default=None, help="recorded noise files for noise perturbations")
    parser.add_argument("--seed", type=integer("--seed", high=SEED_MAX),
                        default=0, help="seed for the perturbations (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object instead of a table")
    parser.add_argument("-o", "--output", default=None, help="also write the JSON report to this file")
    parser.add_argument("--confusion", metavar="IMAGE", default=None,
                        help="with --alignments: draw phones x units (.png/.svg/.pdf; needs audiotok[plot])")
    add_processor_arguments(parser, trim_note="; perturbations apply to the trimmed audio")
    add_provider_argument(parser)
    parser.add_argument("--threads", type=threads(), default=None, help="onnxruntime intra-op threads")


def parse_stream_spec(text: str) -> StreamSettings:
    """``CHUNK:LOOKAHEAD:CONTEXT`` in ms (or ``default``), checked as `audiotok stream` checks its options."""
    if text.strip().lower() == "default":
        return StreamSettings()
    parts = text.split(":")
    if len(parts) != 3:
        raise SettingsError(f"--stream {text}: expected CHUNK:LOOKAHEAD:CONTEXT in ms, e.g. 640:80:640")
    try:
        chunk, lookahead, context = (float(p) for p in parts)
    except ValueError:
        raise SettingsError(f"--stream {text}: CHUNK:LOOKAHEAD:CONTEXT must be numbers of ms") from None
    try:
        return StreamSettings(chunk, lookahead, context)
    except SettingsError as exc:
        raise SettingsError(f"--stream {text}: {exc}") from None


def _check(args: argparse.Namespace) -> None:
    """Options that cannot work, before any bundle or audio is opened."""
    if args.against and args.stream:
        raise SettingsError("--against and --stream are two different comparisons; run them one at a time")
    if args.confusion is not None:
        if args.alignments is None:
            raise SettingsError("--confusion draws phones x units; it needs --alignments")
        image_format(args.confusion)
        if importlib.util.find_spec("matplotlib") is None:
            raise PlotUnavailable("--confusion needs matplotlib, which is not installed: pip install 'audiotok[plot]'")
    if args.output is not None and os.path.isdir(args.output):
        raise SettingsError(f"-o {args.output}: is a folder; name the JSON file to write")
    if args.seed < 0:
        raise SettingsError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise SettingsError(f"--threads must be at least 1, got {args.threads}")
    args.channel, args.trim_silence = processor_arguments(args)


def _check_apart(args: argparse.Namespace, files: list[str]) -> None:
    """The report and the confusion image must not be any file evaluate reads."""
    written = (("-o", args.output), ("--confusion", args.confusion))
    outputs = [Place(f"{flag} {path}", Path(path)) for flag, path in written if path is not None]
    inputs = [Place(f"the bundle {args.bundle}", Path(args.bundle)), *input_places("the input", files),
              *list_arguments(args.audio)]
    for flag, path in (("--against", args.against), ("--alignments", args.alignments)):
        if path is not None:
            inputs.append(Place(f"{flag} {path}", Path(path)))
    check_apart(outputs, inputs)


def _plan(args: argparse.Namespace, bundle: Tokenizer, files: list[str]) -> EvaluationPlan:
    stream = parse_stream_spec(args.stream) if args.stream is not None else None
    perturbations = tuple(expand(args.perturb or [], with_recorded_noise=args.noise_dir is not None))
    noise = NoiseBank(args.noise_dir) if args.noise_dir is not None else None
    alignments = Alignments(args.alignments, files, args.tier) if args.alignments is not None else None
    against = None
    if args.against is not None:
        against = Tokenizer(args.against, providers=args.provider, threads=args.threads, channel=args.channel,
                            trim_db=args.trim_silence)
        warning = check_comparable(bundle, against)
        if warning:
            print(f"audiotok: warning: {warning}", file=sys.stderr)
    return EvaluationPlan(alignments=alignments, against=against, stream=stream, perturbations=perturbations,
                          noise=noise, seed=args.seed)


def report_dict(report: Report) -> dict:
    m = report.bundle.manifest
    out: dict = {"bundle": str(report.bundle.path), "encoder": m.encoder, "layer": m.layer, "k": m.k,
                 "precision": m.precision, "files": report.files, "seconds": round(report.seconds, 3),
                 "stats": report.stats.as_dict()}
    scores = report.alignment
    if scores is not None:
        out["alignment"] = {**asdict(scores), "files": report.aligned, "unaligned": report.unaligned,
                            "tier": report.plan.alignments.tier}
    if report.plan.comparison_name is not None:
        out["comparison"] = {"against": report.plan.comparison_name, **report.comparison.as_dict(),
                             "per_file": [{"path": p, **c.as_dict()} for p, c in report.per_file]}
    if report.plan.perturbations:
        out["stability"] = {name: c.as_dict() for name, c in report.stability.items()}
    return out


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def format_table(report: Report) -> str:
    m, s = report.bundle.manifest, report.stats
    lines = [f"bundle         {report.bundle.path} ({m.encoder} layer {m.layer}, k={m.k}, {m.precision})",
             f"audio          {report.files} files, {report.seconds:.1f} s", "",
             "vocabulary",
             f"  frames          {s.frames}",
             f"  units used      {s.units_used} of {s.k}",
             f"  entropy         {s.entropy_bits:.3f} bits/frame (perplexity {s.perplexity:.1f})",
             f"  bitrate         {s.bitrate:.1f} bit/s; deduplicated {s.dedup_bitrate:.1f} bit/s "
             f"({s.dedup_units} units, {s.dedup_entropy_bits:.3f} bits/unit)",
             f"  mean run        {s.mean_run_frames:.2f} frames ({s.mean_run_frames * 20:.1f} ms)"]
    a = report.alignment
    if a is not None:
        lines += ["", f"alignment (tier {report.plan.alignments.tier}, {report.aligned} of {report.files} files)",
                  f"  PNMI            {_num(a.pnmi)}",
                  f"  phone purity    {_num(a.phone_purity)}",
                  f"  cluster purity  {_num(a.cluster_purity)}",
                  f"  frames          {a.frames} labelled ({a.phones} phones), "
                  f"{a.unlabelled_frames} unlabelled left out"]
        lines += [f"  unaligned       {p}" for p in report.unaligned]
    if report.plan.comparison_name is not None:
        c = report.comparison
        lines += ["", f"comparison with {report.plan.comparison_name}",
                  f"  agreement       {_num(c.agreement, '.2%')} of {c.frames} frames",
                  f"  UED             {_num(c.ued, '.4f')} ({c.edits} edits / {c.reference_units} units)"]
        if len(report.per_file) > 1:
            lines.append("  per file: agreement, UED, path")
            lines += [f"    {_num(f.agreement, '7.2%')}  {_num(f.ued, '.4f')}  {p}" for p, f in report.per_file]
    if report.plan.perturbations:
        lines += ["", "stability (UED clean -> perturbed; agreement on the common frame grid)"]
        lines += [f"  {name:<22}UED {_num(c.ued, '.4f')}   agreement {_num(c.agreement, '.2%')}"
                  for name, c in report.stability.items()]
    return "\n".join(lines)


def _write_json(report: dict, path: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    _check(args)
    files = [f.path for f in list_corpus(args.audio)]
    if not files:
        raise SettingsError(f"no audio files in {' '.join(args.audio)}")
    _check_apart(args, files)
    bundle = Tokenizer(args.bundle, providers=args.provider, threads=args.threads, channel=args.channel,
                       trim_db=args.trim_silence)
    evaluator = Evaluator(bundle, _plan(args, bundle, files))
    progress = CorpusProgress(len(files), desc="evaluate")
    try:
        for path in files:
            progress.update(evaluator.add(path))
    finally:
        progress.close()
    report = evaluator.report
    for path in report.unaligned:
        print(f"audiotok: warning: {path}: no alignment; left out of the alignment scores", file=sys.stderr)
    result = report_dict(report)
    if args.output is not None:
        _write_json(result, args.output)
    if args.confusion is not None and not report.phones.table.sum():
        print(f"audiotok: warning: no labelled frames; {args.confusion} not drawn", file=sys.stderr)
    elif args.confusion is not None:
        from ..plotting.confusion_plot import write_confusion

        write_confusion(report.phones.table, report.phones.phones, args.confusion,
                        title=f"{bundle.path.name}: {bundle.manifest.encoder} layer {bundle.manifest.layer}, "
                              f"k={bundle.manifest.k}")
    print(json.dumps(result) if args.json else format_table(report))
    return 0
