"""Turn audio files into unit ids: one line per file, `path<TAB>ids` or a JSON object.

Example: audiotok tokenize units.onnx speech/*.flac --format jsonl --dedup -o units.jsonl
"""

from __future__ import annotations

import argparse

from .output import FORMATS, atomic_output, format_record
from .tokenizer import Tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle (from `audiotok export`)")
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    parser.add_argument("--format", choices=FORMATS, default="txt",
                        help="txt: `path<TAB>ids`; jsonl: {path, units, frames, seconds}")
    parser.add_argument("--dedup", action="store_true",
                        help="collapse repeated units (GSLM style); jsonl adds their durations in frames")
    parser.add_argument("-o", "--output", default="-", help="write here instead of stdout (atomically)")
    parser.add_argument("--provider", action="append", default=None,
                        help="onnxruntime execution provider (cpu, cuda, ...); repeat for a preference list")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's)")


def run(args: argparse.Namespace) -> int:
    tokenizer = Tokenizer(args.bundle, providers=args.provider, threads=args.threads)
    with atomic_output(args.output) as out:
        for path in args.audio:
            units = tokenizer.tokenize(path)
            out.write(format_record(path, units, args.format, collapse=args.dedup) + "\n")
            out.flush()
    return 0
