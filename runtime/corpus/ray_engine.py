"""The Ray engine: Ray Data feeds items to an actor pool of workers, results stream back to this process.

``ray.data.from_items(items).map_batches(Worker, compute=ActorPoolStrategy(size=N))``: each actor
builds one worker (one model) and processes one item per batch; the driver iterates the results and
writes them through the same writer as the local engine, so outputs are identical. Without an
address this starts a local Ray (all of this machine's cores); with one (``auto``, ``HOST:6379``)
it joins that cluster, whose nodes must see the same audio paths and have audiotok installed.

Items and results cross Ray as pickled bytes, so arrays keep their exact dtype and shape and a
result can be any Python object (Arrow would turn int64 arrays into lists and guess schemas).
Ray is imported only here, only when this engine runs.
"""

from __future__ import annotations

import logging
import pickle
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import AudiotokError, SettingsError
from .engine import Worker, WorkerSpec

INSTALL_HINT = "pip install 'audiotok[distributed]'"
# Items travel to actors in blocks; a block's results come back when all of it is done. Small blocks
# keep every actor busy and stream results (what a crash can lose); 4 items amortise Ray's per-block cost.
ITEMS_PER_BLOCK = 4


CONNECT_TIMEOUT_SECONDS = 5.0


def check_reachable(address: str | None) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on: ``ray.init`` would retry it for minutes, silently.

    ``auto``, ``ray://`` and other forms are left to Ray.
    """
    if not address or "://" in address or address.count(":") != 1:
        return
    host, port = address.rsplit(":", 1)
    if not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        raise AudiotokError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                            "`ray start --head` there, or leave out --ray-address for a local Ray") from None


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise SettingsError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class _ActorWorker:
    """What each Ray actor runs: builds the worker once, then maps pickled items to pickled results."""

    def __init__(self, spec_blob: bytes) -> None:
        self.worker = pickle.loads(spec_blob).build()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [pickle.dumps(self.worker(pickle.loads(blob)), protocol=pickle.HIGHEST_PROTOCOL)
                   for blob in batch["item"]]
        return {"result": np.array(results, dtype=object)}


def _audiotok_cause(exc: BaseException) -> AudiotokError | None:
    """The AudiotokError a Ray task raised, found through Ray's wrappers (``cause``, ``__cause__``)."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        inner = getattr(node, "cause", None)  # RayTaskError: may itself subclass the cause's type
        if isinstance(inner, BaseException):
            node = inner
        elif isinstance(node, AudiotokError):
            return node
        else:
            node = node.__cause__
    return None


class RayEngine:
    def __init__(self, address: str | None = None, jobs: int | None = None, cpus_per_worker: int = 1) -> None:
        self.address = address
        self.jobs = jobs
        self.cpus_per_worker = max(1, cpus_per_worker)
        self.description = f"Ray ({address or 'local'})"
        self._started_here = False

    def connect(self):
        """Join the cluster at ``address``, or start a local Ray; reuse a connection this process has."""
        ray = import_ray()
        if not ray.is_initialized():
            check_reachable(self.address)
            try:
                # log_to_driver=False: the cluster's own logs (a node lost, an actor restarted) stay in its
                # log folder; what the user needs reaches them as results or as one error line
                ray.init(address=self.address, logging_level=logging.ERROR, include_dashboard=False,
                         configure_logging=True, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.address or "a local Ray"
                raise AudiotokError(f"cannot start or join {where}: {str(exc).splitlines()[0][:200]}") from None
            self._started_here = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller shows one bar for the whole corpus
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        return ray

    def pool_size(self, ray) -> int:
        if self.jobs is not None:
            return self.jobs
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))

    def map(self, spec: WorkerSpec, items: Iterable[Any], *, ordered: bool,
            local_worker: Worker | None = None) -> Iterator[Any]:
        rows = [{"item": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)} for item in items]
        if not rows:
            return
        ray = self.connect()
        try:
            size = min(self.pool_size(ray), len(rows))
            self.description = f"Ray ({self.address or 'local'}), {size} actors x {self.cpus_per_worker} CPU"
            ray.data.DataContext.get_current().execution_options.preserve_order = ordered
            blocks = max(min(len(rows), size * 2), -(-len(rows) // ITEMS_PER_BLOCK))
            dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
                _ActorWorker, fn_constructor_kwargs={"spec_blob": pickle.dumps(spec)}, batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=size), num_cpus=self.cpus_per_worker)
            try:
                for row in dataset.iter_rows():
                    yield pickle.loads(row["result"])
            except ray.exceptions.RayError as exc:  # actors that keep dying, a lost node: not one bad file
                cause = _audiotok_cause(exc)
                if cause is not None:  # e.g. a BundleError a worker raised: the same line as a local run
                    raise cause from None
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise AudiotokError(f"the Ray job failed ({first}); finished results are kept") from None
        finally:
            if self._started_here:
                ray.shutdown()
                self._started_here = False
