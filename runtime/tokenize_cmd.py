"""Turn audio files into unit ids: one line per file (txt, jsonl, fairseq) or a folder of .npy shards.

Examples:
  audiotok tokenize units.onnx speech/*.flac --format jsonl --dedup -o units.jsonl
  audiotok tokenize units.onnx corpus/*.flac --format fairseq -o train.km    # `stem|u1 u2 ...`
  audiotok tokenize units.onnx corpus/*.flac --format npy -o units/          # numpy-readable shards
"""

from __future__ import annotations

import argparse

from .tokenizer import Tokenizer
from .unit_formats import FORMATS, open_writer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle (from `audiotok export`)")
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    parser.add_argument("--format", choices=FORMATS, default="txt",
                        help="txt: `path<TAB>ids`; jsonl: {path, units, frames, seconds}; fairseq: `stem|ids`; "
                             "npy: -o FOLDER of uint16 shards + index.tsv")
    parser.add_argument("--dedup", action="store_true",
                        help="collapse repeated units (GSLM style); jsonl and npy add their durations in frames")
    parser.add_argument("-o", "--output", default="-",
                        help="write here instead of stdout (atomically); a folder for --format npy")
    parser.add_argument("--provider", action="append", default=None,
                        help="onnxruntime execution provider (cpu, cuda, ...); repeat for a preference list")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's)")


def run(args: argparse.Namespace) -> int:
    tokenizer = Tokenizer(args.bundle, providers=args.provider, threads=args.threads)
    with open_writer(args.format, args.output, k=tokenizer.manifest.k, dedup=args.dedup) as writer:
        for path in args.audio:
            writer.write(path, tokenizer.tokenize(path))
    return 0
