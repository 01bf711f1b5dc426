"""Turn audio into unit ids: one line per file (txt, jsonl, fairseq) or a folder of .npy shards.

Inputs are audio files, folders (searched recursively) and `@list.tsv` file lists (fairseq's
manifest layout: line 1 a root folder, then `relative_path<TAB>n_samples`).

Examples:
  audiotok tokenize units.onnx speech/*.flac --format jsonl --dedup -o units.jsonl
  audiotok tokenize units.onnx librispeech/ --format jsonl -o units.jsonl --jobs 2
  audiotok tokenize units.onnx @train.tsv --format jsonl -o units.jsonl --engine ray --ray-address auto
  audiotok tokenize units.onnx corpus/ --format fairseq -o train.km    # `stem|u1 u2 ...`
  audiotok tokenize units.onnx corpus/ --format npy -o units/          # numpy-readable shards
  audiotok tokenize units.onnx lecture.flac --max-pass-seconds 150    # up to 150 s in one exact pass

Two ways to write:
  --format jsonl -o FILE   a corpus run: records are appended as files finish (in completion order)
                           and flushed; running the same command again skips the files already in
                           FILE (tokenizing again any that changed since), cuts off a torn last line
                           and never writes a file twice; a resume with other settings is refused.
                           A bad file is reported and listed in FILE's .errors.jsonl; the rest
                           complete, and the exit status is 1 if any failed. --overwrite starts over.
  anything else            all or nothing, in input order: stdout, or FILE (or the npy FOLDER)
                           replaced atomically when every file succeeded; the first bad file stops
                           the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..corpus.choose_engine import make_engine
from ..corpus.engine import Engine, WorkerSpec, check_engine_options
from ..corpus.listing import CorpusFile, list_corpus
from ..corpus.local_engine import LocalEngine
from ..corpus.progress import CorpusProgress
from ..corpus.worker import TokenizeWorker
from ..errors import AudioError, AudiotokError, SettingsError, one_line
from ..formats import FORMATS, ResumableJsonl, open_writer
from ..formats.collisions import Place, check_apart, input_places, list_arguments
from ..formats.records import check_record_path
from ..formats.resumable import side_path
from ..formats.run_identity import file_sha256
from ..formats.staging import check_target
from ..formats.units_folder import check_replaceable_folder
from ..tokenizer import Tokenizer
from ..windowing import DEFAULT_MAX_PASS_SECONDS, max_pass_seconds
from .options import add_engine_arguments, add_processor_arguments, add_provider_argument, processor_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle (from `audiotok export`)")
    parser.add_argument("audio", nargs="+", metavar="PATH",
                        help="audio files (wav, flac, ogg, mp3, ...), folders, or @list.tsv (a file list)")
    parser.add_argument("--format", choices=FORMATS, default="txt",
                        help="txt: `path<TAB>ids`; jsonl: {path, units, frames, seconds}; fairseq: `stem|ids`; "
                             "npy: -o FOLDER of uint16 shards + index.tsv")
    parser.add_argument("--dedup", action="store_true",
                        help="collapse repeated units (GSLM style); jsonl and npy add their durations in frames")
    parser.add_argument("-o", "--output", default="-",
                        help="write here instead of stdout (jsonl: resumable corpus run; else atomically); "
                             "a folder for --format npy")
    add_engine_arguments(parser, workers="parallel workers, each with its own model",
                         threads="intra-op threads per worker (default: cores // jobs locally, 1 per Ray actor; "
                                 "onnxruntime's default for a single job)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --format jsonl -o FILE: discard FILE's records and start over")
    add_provider_argument(parser)
    add_processor_arguments(parser, trim_note="; jsonl records then carry the first kept frame's offset "
                                               "in seconds")
    parser.add_argument("--max-pass-seconds", default=DEFAULT_MAX_PASS_SECONDS, metavar="S",
                        help="files up to S seconds run in one pass: exactly the encoder's units for the whole "
                             "file. Longer files run in 30 s windows with 3 s of context on each side, in flat "
                             "memory. Raise it (e.g. 150) for the reference units of long files: memory grows "
                             "with the square of the pass length (docs/long-inputs-and-exact-units.md)")


def _check(args: argparse.Namespace) -> None:
    check_engine_options(args.jobs, args.threads, args.engine, args.ray_address)
    args.channel, args.trim_silence = processor_arguments(args)
    args.max_pass_seconds = max_pass_seconds(args.max_pass_seconds)
    if args.overwrite and not resumable(args):
        raise SettingsError("--overwrite applies to a resumable run (--format jsonl -o FILE)")


def resumable(args: argparse.Namespace) -> bool:
    return args.format == "jsonl" and args.output not in (None, "-")


def run(args: argparse.Namespace) -> int:
    _check(args)
    files = list_corpus(args.audio)
    if not files:
        raise AudioError(f"no audio files found in {', '.join(args.audio)} (looked for wav, flac, ogg, mp3, ...)")
    _check_outputs(args, files)
    engine, threads = make_engine(args.engine, args.jobs, args.threads, args.ray_address)
    in_process = isinstance(engine, LocalEngine) and engine.jobs == 1
    # Open the bundle here first: a bad bundle is one clear error before any worker starts.
    tokenizer = Tokenizer(args.bundle, providers=args.provider, threads=threads if in_process else 1,
                          max_pass_seconds=args.max_pass_seconds, channel=args.channel, trim_db=args.trim_silence)
    spec = WorkerSpec(TokenizeWorker, {"bundle": str(Path(args.bundle).absolute()), "providers": args.provider,
                                       "threads": threads, "max_pass_seconds": args.max_pass_seconds,
                                       "channel": args.channel, "trim_db": args.trim_silence})
    local_worker = TokenizeWorker(tokenizer=tokenizer) if in_process else None
    if resumable(args):
        identity = run_identity(tokenizer, args.max_pass_seconds)
        del tokenizer
        return _run_resumable(args, files, engine, spec, local_worker, identity)
    k = tokenizer.manifest.k
    del tokenizer
    return _run_all_or_nothing(args, files, engine, spec, local_worker, k)


def _check_outputs(args: argparse.Namespace, files: list[CorpusFile]) -> None:
    """Refuse what the output could not hold, before any work: a path that would forge records, a folder
    -o, an output that is (or would replace) one of the inputs."""
    if args.format != "jsonl":
        for item in files:
            check_record_path(item.path, args.format)
    if args.output in (None, "-"):
        return
    if args.format == "npy":
        check_replaceable_folder(Path(args.output))
    inputs = [Place(f"the bundle {args.bundle}", Path(args.bundle)), *list_arguments(args.audio),
              *input_places("the input", (f.path for f in files))]
    check_apart(_output_places(args), inputs)  # first: a link to an input is named as that input
    if args.format != "npy":
        check_target(args.output)


def _output_places(args: argparse.Namespace) -> list[Place]:
    """Every file the run writes: -o, and a resumable run's side files; an npy -o is a folder."""
    out = Path(args.output)
    if args.format == "npy":
        return [Place(f"-o {out}", out, folder=True)]
    places = [Place(f"-o {out}", out)]
    if resumable(args):
        places += [Place(f"{side_path(out, suffix)} (beside -o {out})", side_path(out, suffix))
                   for suffix in (".run.json", ".errors.jsonl")]
    return places


def run_identity(tokenizer: Tokenizer, max_pass_seconds: float) -> dict:
    """Everything that decides this run's units, stated or defaulted (see :mod:`..formats.run_identity`)."""
    m, pre = tokenizer.manifest, tokenizer.preprocess
    return {"bundle": str(tokenizer.path.absolute()), "bundle_sha256": file_sha256(tokenizer.path),
            "centroids_sha256": m.centroids_sha256, "encoder": m.encoder, "layer": m.layer, "k": m.k,
            "normalization": m.normalization, "precision": m.precision, "channel": pre.channel,
            "trim_silence_db": pre.trim_db, "frame_rule": pre.frame_rule, "feature_norm": m.feature_norm,
            "max_pass_seconds": max_pass_seconds}  # another limit gives other units past 30 s


def _run_all_or_nothing(args, files: list[CorpusFile], engine: Engine, spec: WorkerSpec, local_worker,
                        k: int) -> int:
    """Every file or nothing: the first failure raises, and the writer discards its staged output."""
    progress = CorpusProgress(len(files), desc="tokenize")
    try:
        with open_writer(args.format, args.output, k=k, dedup=args.dedup) as writer:
            for result in engine.map(spec, files, ordered=True, local_worker=local_worker):
                if result.error is not None:
                    raise AudioError(result.error)
                writer.write(result.path, result.units, result.offset)
                progress.update(result.seconds)
    finally:
        progress.close()
    if args.output not in (None, "-"):
        print(f"audiotok: wrote {args.output}: {progress.summary()}", file=sys.stderr)
    return 0


def _run_resumable(args, files: list[CorpusFile], engine: Engine, spec: WorkerSpec, local_worker,
                   identity: dict) -> int:
    out = ResumableJsonl(args.output, dedup=args.dedup, identity=identity, overwrite=args.overwrite)
    try:
        left = set(out.todo([f.path for f in files]))
    except BaseException:
        out.release()  # nothing written yet: the output (and its side files) as they were
        raise
    todo = [f for f in files if f.path in left]
    if out.done or out.repaired_bytes or out.redone:
        torn = f"; cut off a torn last record ({out.repaired_bytes} bytes)" if out.repaired_bytes else ""
        redone = (f"; {out.redone} changed since their records were written (their old records dropped, "
                  "tokenized again)") if out.redone else ""
        print(f"audiotok: resuming {args.output}: {len(files) - len(todo)} of {len(files)} files already done"
              f"{torn}{redone}", file=sys.stderr)
    progress = CorpusProgress(len(todo), desc="tokenize")
    try:
        with out:  # a failure or Ctrl-C keeps the finished records and lists the failed files
            for result in engine.map(spec, todo, ordered=False, local_worker=local_worker):
                if result.error is not None:
                    out.record_error(result.path, result.error)
                    progress.note(f"audiotok: warning: {one_line(result.error)}")
                    progress.update(0.0, failed=True)
                else:
                    out.write(result.path, result.units, result.offset)
                    progress.update(result.seconds)
    finally:
        progress.close()
    done_here = sum(f.path in out.done for f in files)
    others = len(out.done) - done_here  # records of paths this run was not given (other spellings, another cwd)
    also = (f"; it also holds {others} records of paths not given this run (records match paths as written: "
            "resume with the same path arguments, from the same folder)") if others else ""
    print(f"audiotok: {args.output}: {progress.summary()} with {engine.description}; "
          f"{done_here} of {len(files)} files done{also}", file=sys.stderr)
    if out.errors:
        raise AudiotokError(f"{len(out.errors)} of {len(files)} files failed, listed in {out.errors_path} "
                            "(the others are done; run again to retry them)")
    return 0
