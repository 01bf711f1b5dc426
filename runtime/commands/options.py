"""Options several commands share, declared once so that a flag means the same everywhere.

tokenize and train both fan work out over --engine/--jobs/--threads/--ray-address, and several
commands pick onnxruntime providers with --provider; tokenize and evaluate read --channel and
--trim-silence (checked by runtime/audio/preprocess.py's parsers).
"""

from __future__ import annotations

import argparse

from ..audio.preprocess import parse_channel, parse_trim_db
from ..corpus.choose_engine import ENGINES
from .numbers import integer

MAX_JOBS = 4096  # Ray actors (or local processes) one run may ask for; locally also at most 4 per core
MAX_WORKER_THREADS = 1024  # threads per worker; locally also at most 4 per core (see check_engine_options)


def add_engine_arguments(parser: argparse.ArgumentParser, *, workers: str, threads: str) -> None:
    """--engine, --jobs, --threads and --ray-address; ``workers`` and ``threads`` say what they run."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: processes on this machine; ray: a Ray Data actor pool")
    parser.add_argument("--jobs", type=integer("--jobs", low=1, high=MAX_JOBS), default=None,
                        help=f"{workers}: local processes (default 1), or Ray actors (default: the cluster's "
                             "CPUs / --threads)")
    parser.add_argument("--threads", type=integer("--threads", low=1, high=MAX_WORKER_THREADS), default=None,
                        help=f"{threads}; at most 4 per core of this machine with --engine local")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (`auto`, HOST:6379); default: start a local Ray")


def add_provider_argument(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """--provider, repeatable for a preference list (cpu, cuda, ...)."""
    parser.add_argument("--provider", action="append", default=None,
                        help=f"onnxruntime execution provider{purpose} (cpu, cuda, ...); repeat for a preference "
                             "list; falls back to CPU")


def add_processor_arguments(parser: argparse.ArgumentParser, *, trim_note: str = "") -> None:
    """``--channel`` and ``--trim-silence`` for the commands that read audio files (tokenize, evaluate)."""
    parser.add_argument("--channel", default=None,
                        help="multichannel files: 'mean' mixes all channels, N takes channel N alone (0 is the "
                             "first; audioTokenizer takes 0) (default: the bundle's, 'mean' unless exported otherwise)")
    parser.add_argument("--trim-silence", default=None, metavar="DB",
                        help="drop leading and trailing audio quieter than DB below the loudest part (as librosa's "
                             f"trim with top_db=DB; e.g. 30){trim_note} (default: no trim)")


def processor_arguments(args: argparse.Namespace) -> tuple[int | str | None, float | None]:
    """The checked (channel, trim_db) of :func:`add_processor_arguments`' options."""
    channel = None if args.channel is None else parse_channel(args.channel)
    return channel, parse_trim_db(args.trim_silence)
