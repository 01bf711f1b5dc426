"""Feature extraction into the shard cache, resumable, on this machine or on a Ray cluster.

Plan the shards (or read the plan back), skip the ones already complete, extract the rest with the
chosen engine and write each shard as it arrives. A crash loses only the shards in flight; running
the same command again picks up from there. The result is the same whichever engine extracted it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from audiotok.models import Encoder
from audiotok.runtime.constants import FRAME_SECONDS
from audiotok.runtime.corpus.choose_engine import make_engine
from audiotok.runtime.corpus.engine import WorkerSpec
from audiotok.runtime.corpus.listing import CorpusFile
from audiotok.runtime.corpus.local_engine import LocalEngine
from audiotok.runtime.corpus.progress import CorpusProgress
from audiotok.runtime.log import log
from audiotok.runtime.windowing import OFFLINE_POLICY

from .feature_cache import CachedFeatures, FeatureCache, describe
from .shard_worker import ShardWorker


@dataclass(frozen=True)
class ExtractionConfig:
    model: str
    layer: int | None
    normalize: str
    cache_root: Path
    percent: float = 100.0
    seed: int = 0
    max_hours: float | None = None
    shard_seconds: float = 600.0
    engine: str = "local"  # "local" or "ray"
    jobs: int | None = None  # local processes (default 1) or Ray actors (default: cluster CPUs / threads)
    threads: int | None = None  # torch threads per worker
    ray_address: str | None = None
    channel: int | str = "mean"  # processor options (runtime/audio/preprocess.py)
    trim_db: float | None = None
    pad_last_frame: bool = False
    feature_norm: str = "none"  # "l2": rows L2-normalised before they are cached
    max_frames_file: int | None = None  # rows kept per file at most (seeded random subsample)

    def processor(self) -> dict:
        """The options the features depend on beyond the encoder: worker arguments and cache key."""
        return {"channel": self.channel, "trim_db": self.trim_db, "pad_last_frame": self.pad_last_frame,
                "feature_norm": self.feature_norm, "max_frames_file": self.max_frames_file}


@dataclass(frozen=True)
class Extracted:
    features: CachedFeatures
    frames: int  # frames read (before --percent sampling)
    files: list[str]  # files that gave features
    errors: list[dict]  # {"path", "error"} of files that could not be read
    folder: Path  # the cache folder used


def extract(files: list[CorpusFile], encoder: Encoder, config: ExtractionConfig) -> Extracted:
    """Features of ``files`` in the cache, extracting only the shards it does not hold yet."""
    description = describe(spec=asdict(encoder.spec), model=config.model, policy=asdict(OFFLINE_POLICY),
                           files=files, percent=config.percent, seed=config.seed, max_hours=config.max_hours,
                           shard_seconds=config.shard_seconds, processor=config.processor())
    cache = FeatureCache(config.cache_root, description)
    plan = cache.plan(files, config.shard_seconds, config.max_hours)
    metas = {task.index: cache.read_index(task.index) for task in plan}
    todo = [task for task in plan if metas[task.index] is None]
    if len(todo) < len(plan):
        log.info("features: %d of %d shards already in %s", len(plan) - len(todo), len(plan), cache.folder)
    if todo:
        engine, threads = make_engine(config.engine, config.jobs, config.threads, config.ray_address)
        in_process = isinstance(engine, LocalEngine) and engine.jobs == 1
        model = str(Path(config.model).absolute()) if Path(config.model).is_dir() else config.model
        spec = WorkerSpec(ShardWorker, {"model": model, "layer": encoder.spec.layer,
                                        "normalize": config.normalize, "percent": config.percent,
                                        "seed": config.seed, "threads": threads, **config.processor()})
        local = ShardWorker(encoder=encoder, percent=config.percent, seed=config.seed,
                            threads=threads, **config.processor()) if in_process else None
        progress = CorpusProgress(len(todo), desc="features", unit="shard")
        try:
            for result in engine.map(spec, todo, ordered=False, local_worker=local):
                meta = cache.write(result)
                metas[result.index] = meta
                for error in result.errors:
                    progress.note(f"audiotok: warning: skipped {error['error']}")
                progress.update(sum(f["frames"] for f in meta["files"]) * FRAME_SECONDS)
        finally:
            progress.close()
    done = [metas[task.index] for task in plan]
    return Extracted(
        features=CachedFeatures(cache, done),
        frames=sum(f["frames"] for m in done for f in m["files"]),
        files=[f["path"] for m in done for f in m["files"]],
        errors=[e for m in done for e in m["errors"]],
        folder=cache.folder,
    )
