"""The local engine: N worker processes on this machine, each with its own model and thread share.

One onnxruntime session with all cores scales worse than N sessions with one core each (small
matrix products, serial stretches between operators), and Python work around it (decoding,
resampling) is single-threaded, so corpus throughput comes from processes. Workers are started
with ``spawn``: no inherited locks or thread pools from the parent, the same on every OS. With one
job nothing is started and items run in this process.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import AudiotokError
from .engine import Worker, WorkerSpec

IN_FLIGHT_PER_JOB = 2  # items queued per worker: enough to never idle, few enough to lose little on a crash

_worker: Worker | None = None  # the worker of this process, built once by _start_worker


def _start_worker(spec: WorkerSpec) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; workers just stop
    _worker = spec.build()


def _run_item(item: Any) -> Any:
    assert _worker is not None, "worker process started without _start_worker"
    return _worker(item)


class LocalEngine:
    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        self.jobs = jobs
        self.description = "this process" if jobs == 1 else f"{jobs} local processes"

    def map(self, spec: WorkerSpec, items: Iterable[Any], *, ordered: bool,
            local_worker: Worker | None = None) -> Iterator[Any]:
        """Results of ``worker(item)``; in input order if ``ordered``, else as they finish.

        ``local_worker`` (already built from ``spec``) is used for the one-job case so a model the
        caller loaded to validate its input is not loaded twice.
        """
        if self.jobs == 1:
            worker = local_worker or spec.build()
            for item in items:
                yield worker(item)
            return
        yield from self._pool_map(spec, iter(items), ordered)

    def _pool_map(self, spec: WorkerSpec, items: Iterator[Any], ordered: bool) -> Iterator[Any]:
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_start_worker, initargs=(spec,))
        window = self.jobs * IN_FLIGHT_PER_JOB
        pending: deque[Future] = deque()
        running: dict[Future, Any] = {}
        try:
            for item in items:
                future = pool.submit(_run_item, item)
                pending.append(future)
                running[future] = item
                if len(pending) >= window:
                    yield from self._drain(pending, running, ordered, keep=window - 1)
            yield from self._drain(pending, running, ordered, keep=0)
        except BrokenProcessPool:
            lost = ", ".join(str(getattr(i, "path", i)) for i in list(running.values())[:4])
            raise AudiotokError(f"a worker process died (out of memory, or killed) while working on {lost}"
                                f"{' ...' if len(running) > 4 else ''}; finished results are kept") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _drain(pending: deque[Future], running: dict[Future, Any], ordered: bool, keep: int) -> Iterator[Any]:
        """Yield finished results until at most ``keep`` items are still in flight."""
        while len(pending) > keep:
            if ordered:
                future = pending.popleft()
                result = future.result()
            else:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                future = next(f for f in pending if f in done)  # the oldest finished one: stable order
                pending.remove(future)
                result = future.result()
            del running[future]
            yield result
