"""The corpus engine and execution-provider options, declared once for every command that takes them.

tokenize and train both fan work out over --engine/--jobs/--threads/--ray-address, and several
commands pick onnxruntime providers with --provider: one helper adds each group, one function
turns the parsed values into an engine, so the flags mean the same everywhere.
"""

from __future__ import annotations

import argparse

from .engine import Engine, threads_per_job
from .local_engine import LocalEngine

ENGINES = ("local", "ray")


def add_engine_arguments(parser: argparse.ArgumentParser, *, workers: str, threads: str) -> None:
    """--engine, --jobs, --threads and --ray-address; ``workers`` and ``threads`` say what they run."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: processes on this machine; ray: a Ray Data actor pool")
    parser.add_argument("--jobs", type=int, default=None,
                        help=f"{workers}: local processes (default 1), or Ray actors (default: the cluster's "
                             "CPUs / --threads)")
    parser.add_argument("--threads", type=int, default=None, help=threads)
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (`auto`, HOST:6379); default: start a local Ray")


def add_provider_argument(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """--provider, repeatable for a preference list (cpu, cuda, ...)."""
    parser.add_argument("--provider", action="append", default=None,
                        help=f"onnxruntime execution provider{purpose} (cpu, cuda, ...); repeat for a preference "
                             "list; falls back to CPU")


def make_engine(engine: str, jobs: int | None, threads: int | None, ray_address: str | None) -> tuple[Engine, int | None]:
    """The engine and the threads each of its workers gets."""
    if engine == "ray":
        from .ray_engine import RayEngine

        per_worker = threads or 1
        return RayEngine(ray_address, jobs, cpus_per_worker=per_worker), per_worker
    jobs = jobs or 1
    return LocalEngine(jobs), threads_per_job(jobs, threads)
