"""The corpus engine a run's options name: local processes or a Ray cluster, and each worker's threads."""

from __future__ import annotations

from .engine import Engine, threads_per_job
from .local_engine import LocalEngine

ENGINES = ("local", "ray")


def make_engine(engine: str, jobs: int | None, threads: int | None,
                ray_address: str | None) -> tuple[Engine, int | None]:
    """The engine and the threads each of its workers gets."""
    if engine == "ray":
        from .ray_engine import RayEngine

        per_worker = threads or 1
        return RayEngine(ray_address, jobs, cpus_per_worker=per_worker), per_worker
    jobs = jobs or 1
    return LocalEngine(jobs), threads_per_job(jobs, threads)
