"""What every engine runs: a worker built once per process from a picklable recipe, applied per item.

Loading a model costs seconds and hundreds of MB, so it must happen once per worker process (or Ray
actor), never per file. A :class:`WorkerSpec` names a top-level class (picklable by reference) and
its keyword arguments; each engine builds one worker from it in every process it starts and calls
``worker(item)`` for each item. Workers catch per-item failures themselves and return them as
results, so one corrupt file never takes an engine down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import SettingsError
from ..bundle.session import THREADS_PER_CORE, thread_limit


class Worker(Protocol):
    def __call__(self, item: Any) -> Any: ...


@dataclass(frozen=True)
class WorkerSpec:
    """``factory(**kwargs)`` builds a worker; both must pickle (a module-level class and plain values)."""

    factory: Callable[..., Worker]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Worker:
        return self.factory(**self.kwargs)


class Engine(Protocol):
    """Applies a worker to items; yields one result per item (in input order only if ``ordered``)."""

    description: str

    def map(self, spec: WorkerSpec, items: Iterable[Any], *, ordered: bool,
            local_worker: Worker | None = None) -> Iterator[Any]: ...


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_job(jobs: int, requested: int | None) -> int | None:
    """A fair share of the cores for each of ``jobs`` workers; None (onnxruntime/torch default) for one job.

    Oversubscribing (N workers each spinning up all-core thread pools) makes N jobs slower than one,
    so N workers get ``cores // N`` threads each unless the user says otherwise.
    """
    if requested is not None:
        return requested
    if jobs == 1:
        return None
    return max(1, available_cores() // jobs)


def check_engine_options(jobs: int | None, threads: int | None, engine: str, ray_address: str | None) -> None:
    """The --jobs/--threads/--engine/--ray-address checks that tokenize and train share."""
    if jobs is not None and jobs < 1:
        raise SettingsError(f"--jobs must be at least 1, got {jobs}")
    if threads is not None and threads < 1:
        raise SettingsError(f"--threads must be at least 1, got {threads}")
    if engine != "ray":  # a Ray cluster's size is not this machine's; its bounds are the option parser's
        for option, value in (("--jobs", jobs), ("--threads", threads)):
            if value is not None and value > thread_limit():
                raise SettingsError(f"{option} must be at most {thread_limit()} ({THREADS_PER_CORE} per core of "
                                    f"this machine), got {value}")
    if ray_address and engine != "ray":
        raise SettingsError("--ray-address needs --engine ray")
