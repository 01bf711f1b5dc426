"""Turn audio into unit ids: one line per file (txt, jsonl, fairseq) or a folder of .npy shards.

Inputs are audio files, folders (searched recursively) and `@list.tsv` fairseq manifests (line 1 a
root folder, then `relative_path<TAB>n_samples`).

Examples:
  audiotok tokenize units.onnx speech/*.flac --format jsonl --dedup -o units.jsonl
  audiotok tokenize units.onnx librispeech/ --format jsonl -o units.jsonl --jobs 2
  audiotok tokenize units.onnx @train.tsv --format jsonl -o units.jsonl --engine ray --ray-address auto
  audiotok tokenize units.onnx corpus/ --format fairseq -o train.km    # `stem|u1 u2 ...`
  audiotok tokenize units.onnx corpus/ --format npy -o units/          # numpy-readable shards

Two ways to write:
  --format jsonl -o FILE   a corpus run: records are appended as files finish (in completion order)
                           and flushed; running the same command again skips the files already in
                           FILE, cuts off a torn last line and never writes a file twice. A bad file
                           is reported and listed in FILE's .errors.jsonl; the rest complete, and the
                           exit status is 1 if any failed. --overwrite starts over.
  anything else            all or nothing, in input order: stdout, or FILE (or the npy FOLDER)
                           replaced atomically when every file succeeded; the first bad file stops
                           the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .corpus import CorpusFile, list_corpus
from .engine import Engine, WorkerSpec, check_engine_options, threads_per_job
from .errors import AudioError, AudiotokError, SettingsError
from .local_engine import LocalEngine
from .progress import CorpusProgress
from .resume import ResumableJsonl
from .tokenize_worker import TokenizeWorker
from .tokenizer import Tokenizer
from .unit_formats import FORMATS, open_writer

ENGINES = ("local", "ray")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle (from `audiotok export`)")
    parser.add_argument("audio", nargs="+", metavar="PATH",
                        help="audio files (wav, flac, ogg, mp3, ...), folders, or @manifest.tsv")
    parser.add_argument("--format", choices=FORMATS, default="txt",
                        help="txt: `path<TAB>ids`; jsonl: {path, units, frames, seconds}; fairseq: `stem|ids`; "
                             "npy: -o FOLDER of uint16 shards + index.tsv")
    parser.add_argument("--dedup", action="store_true",
                        help="collapse repeated units (GSLM style); jsonl and npy add their durations in frames")
    parser.add_argument("-o", "--output", default="-",
                        help="write here instead of stdout (jsonl: resumable corpus run; else atomically); "
                             "a folder for --format npy")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel workers, each with its own model: local processes (default 1), "
                             "or Ray actors (default: the cluster's CPUs / --threads)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: processes on this machine; ray: a Ray Data actor pool")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (`auto`, HOST:6379); default: start a local Ray")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --format jsonl -o FILE: discard FILE's records and start over")
    parser.add_argument("--provider", action="append", default=None,
                        help="onnxruntime execution provider (cpu, cuda, ...); repeat for a preference list")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads per worker (default: cores // jobs locally, 1 per Ray actor; "
                             "onnxruntime's default for a single job)")


def _check(args: argparse.Namespace) -> None:
    check_engine_options(args.jobs, args.threads, args.engine, args.ray_address)
    if args.overwrite and not resumable(args):
        raise SettingsError("--overwrite applies to a resumable run (--format jsonl -o FILE)")


def resumable(args: argparse.Namespace) -> bool:
    return args.format == "jsonl" and args.output not in (None, "-")


def make_engine(args: argparse.Namespace) -> tuple[Engine, int | None]:
    """The engine and the threads each of its workers gets."""
    if args.engine == "ray":
        from .ray_engine import RayEngine

        threads = args.threads or 1
        return RayEngine(args.ray_address, args.jobs, cpus_per_worker=threads), threads
    jobs = args.jobs or 1
    return LocalEngine(jobs), threads_per_job(jobs, args.threads)


def run(args: argparse.Namespace) -> int:
    _check(args)
    files = list_corpus(args.audio)
    if not files:
        raise AudioError(f"no audio files found in {', '.join(args.audio)} (looked for wav, flac, ogg, mp3, ...)")
    engine, threads = make_engine(args)
    in_process = isinstance(engine, LocalEngine) and engine.jobs == 1
    # Open the bundle here first: a bad bundle is one clear error before any worker starts.
    tokenizer = Tokenizer(args.bundle, providers=args.provider, threads=threads if in_process else 1)
    spec = WorkerSpec(TokenizeWorker, {"bundle": str(Path(args.bundle).absolute()), "providers": args.provider,
                                       "threads": threads})
    local_worker = TokenizeWorker(tokenizer=tokenizer) if in_process else None
    if resumable(args):
        identity = {"bundle": str(Path(args.bundle).absolute()), **_bundle_identity(tokenizer)}
        del tokenizer
        return _run_resumable(args, files, engine, spec, local_worker, identity)
    k = tokenizer.manifest.k
    del tokenizer
    return _run_all_or_nothing(args, files, engine, spec, local_worker, k)


def _bundle_identity(tokenizer: Tokenizer) -> dict:
    m = tokenizer.manifest
    return {"centroids_sha256": m.centroids_sha256, "encoder": m.encoder, "layer": m.layer, "k": m.k,
            "normalization": m.normalization, "precision": m.precision}


def _run_all_or_nothing(args, files: list[CorpusFile], engine: Engine, spec: WorkerSpec, local_worker,
                        k: int) -> int:
    """Every file or nothing: the first failure raises, and the writer discards its staged output."""
    progress = CorpusProgress(len(files), desc="tokenize")
    try:
        with open_writer(args.format, args.output, k=k, dedup=args.dedup) as writer:
            for result in engine.map(spec, files, ordered=True, local_worker=local_worker):
                if result.error is not None:
                    raise AudioError(result.error)
                writer.write(result.path, result.units)
                progress.update(result.seconds)
    finally:
        progress.close()
    if args.output not in (None, "-"):
        print(f"audiotok: wrote {args.output}: {progress.summary()}", file=sys.stderr)
    return 0


def _run_resumable(args, files: list[CorpusFile], engine: Engine, spec: WorkerSpec, local_worker,
                   identity: dict) -> int:
    out = ResumableJsonl(args.output, dedup=args.dedup, identity=identity, overwrite=args.overwrite)
    todo = [f for f in files if f.path not in out.done]
    if out.done or out.repaired_bytes:
        torn = f"; cut off a torn last record ({out.repaired_bytes} bytes)" if out.repaired_bytes else ""
        print(f"audiotok: resuming {args.output}: {len(files) - len(todo)} of {len(files)} files already done"
              f"{torn}", file=sys.stderr)
    progress = CorpusProgress(len(todo), desc="tokenize")
    try:
        for result in engine.map(spec, todo, ordered=False, local_worker=local_worker):
            if result.error is not None:
                out.record_error(result.path, result.error)
                progress.note(f"audiotok: warning: {result.error}")
                progress.update(0.0, failed=True)
            else:
                out.write(result.path, result.units)
                progress.update(result.seconds)
    finally:
        progress.close()
        out.close()
    print(f"audiotok: {args.output}: {progress.summary()} with {engine.description}; "
          f"{len(out.done)} of {len(files)} files done", file=sys.stderr)
    if out.errors:
        raise AudiotokError(f"{len(out.errors)} of {len(files)} files failed, listed in {out.errors_path} "
                            "(the others are done; run again to retry them)")
    return 0
