"""Fit k-means units on speech: features from a frozen encoder at one layer, then MiniBatchKMeans.

Writes the centroids (.npy, float32, k x dim) and a JSON sidecar beside them (same name, .json)
that records the encoder, layer, k, data used and the fit's statistics; `audiotok export` reads it
to refuse centroids used with the wrong layer. With matplotlib installed (the [plot] extra) it also
draws the cluster usage beside them (same name, .usage.png).

Features are first written to a cache of float16 shards (--cache, default: audiotok-features/ beside
the centroids, keyed by encoder, layer and file list): a crashed run started again extracts only the
missing shards, and other --k values on the same data reuse them. k-means then runs in memory with
scikit-learn's MiniBatchKMeans (GSLM settings) when the features fit in --fit-memory-gb as float32,
else out of core (partial_fit over the shards, one shard in memory at a time).

Examples:
  audiotok train --model logmel --k 100 -o units.npy speech/
  audiotok train --model facebook/hubert-base-ls960 --layer 6 --k 500 --percent 10 -o hubert6-500.npy \
      @librispeech-960.tsv --jobs 2
  audiotok train --model ./hubert-base --k 500 -o units.npy corpus/ --engine ray --ray-address auto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiotok.models import load_encoder
from audiotok.models.huggingface import NORMALIZE_CHOICES
from audiotok.runtime.constants import FRAME_SECONDS
from audiotok.runtime.engine import check_engine_options
from audiotok.runtime.errors import AudioError, SettingsError

from .data import training_files
from .extract import ExtractionConfig, extract
from .feature_cache import DEFAULT_CACHE_NAME
from .kmeans import KMeansConfig, fit_kmeans, unit_usage
from .out_of_core import fit_out_of_core
from .sidecar import TrainingRecord, write_centroids
from .usage_plot import write_usage_plot

DEFAULT_FIT_MEMORY_GB = 4.0
DEFAULT_SHARD_MINUTES = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="audio files, folders (searched recursively), or @manifest.tsv")
    parser.add_argument("--model", default="logmel",
                        help="'logmel' (built in, no download), a hub id such as facebook/hubert-base-ls960, "
                             "or a local transformers folder")
    parser.add_argument("--layer", type=int, default=None,
                        help="hidden_states index to cluster (default: 6, or the last layer if fewer)")
    parser.add_argument("--k", type=int, required=True, help="number of units (e.g. 50, 100, 200, 500)")
    parser.add_argument("-o", "--output", required=True, help="centroids .npy to write (sidecar: same name, .json)")
    parser.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="auto",
                        help="waveform normalization; auto reads the checkpoint's feature extractor")
    parser.add_argument("--max-hours", type=float, default=None, help="stop reading audio after this many hours")
    parser.add_argument("--percent", type=float, default=100.0,
                        help="use this percent of frames, sampled at random (seeded per file)")
    parser.add_argument("--seed", type=int, default=0, help="seed for frame sampling and k-means")
    parser.add_argument("--batch-size", type=int, default=10_000, help="MiniBatchKMeans batch size")
    parser.add_argument("--n-init", type=int, default=20, help="k-means++ initialisations to try")
    parser.add_argument("--max-iter", type=int, default=100, help="k-means passes over the data at most")
    parser.add_argument("--max-no-improvement", type=int, default=100,
                        help="stop after this many mini-batches without inertia improvement")
    parser.add_argument("--cache", default=None,
                        help=f"feature cache folder (default: {DEFAULT_CACHE_NAME}/ beside the centroids)")
    parser.add_argument("--shard-minutes", type=float, default=DEFAULT_SHARD_MINUTES,
                        help="audio per cache shard: the unit of resumption and of parallel work")
    parser.add_argument("--fit-memory-gb", type=float, default=DEFAULT_FIT_MEMORY_GB,
                        help="fit in memory when the features take at most this much as float32, "
                             "else out of core (0: always out of core)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="feature extraction: local processes, or a Ray Data actor pool")
    parser.add_argument("--jobs", type=int, default=None,
                        help="extraction workers, each with its own encoder: local processes (default 1), "
                             "or Ray actors (default: the cluster's CPUs / --threads)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (default: cores // jobs locally, 1 per Ray actor)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (`auto`, HOST:6379); default: start a local Ray")


def _check(args: argparse.Namespace) -> None:
    if args.k < 2:
        raise SettingsError(f"--k must be at least 2, got {args.k}")
    if not 0 < args.percent <= 100:
        raise SettingsError(f"--percent must be in (0, 100], got {args.percent}")
    if args.max_hours is not None and args.max_hours <= 0:
        raise SettingsError(f"--max-hours must be positive, got {args.max_hours}")
    if not args.output.endswith(".npy"):
        raise SettingsError(f"-o {args.output}: centroids are written as .npy; give a name ending in .npy")
    if args.shard_minutes <= 0:
        raise SettingsError(f"--shard-minutes must be positive, got {args.shard_minutes}")
    if args.fit_memory_gb < 0:
        raise SettingsError(f"--fit-memory-gb must not be negative, got {args.fit_memory_gb}")
    check_engine_options(args.jobs, args.threads, args.engine, args.ray_address)


def run(args: argparse.Namespace) -> int:
    _check(args)
    files = training_files(args.data)
    encoder = load_encoder(args.model, args.layer, args.normalize)
    spec = encoder.spec
    print(f"audiotok: {spec.name} ({spec.encoder_type}) layer {spec.layer}, dim {spec.dim}, "
          f"normalization {spec.normalization}; {len(files)} files", file=sys.stderr)
    cache_root = Path(args.cache) if args.cache else Path(args.output).parent / DEFAULT_CACHE_NAME
    extracted = extract(files, encoder, ExtractionConfig(
        model=args.model, layer=args.layer, normalize=args.normalize, cache_root=cache_root,
        percent=args.percent, seed=args.seed, max_hours=args.max_hours, shard_seconds=args.shard_minutes * 60,
        engine=args.engine, jobs=args.jobs, threads=args.threads, ray_address=args.ray_address))
    del encoder
    features = extracted.features
    if extracted.errors:
        print(f"audiotok: warning: skipped {len(extracted.errors)} unreadable file(s) of {len(files)}",
              file=sys.stderr)
    if features.rows == 0:
        raise AudioError(f"no usable audio in {', '.join(args.data)}")
    if features.rows < args.k:
        raise SettingsError(f"only {features.rows} frames of audio for --k {args.k}: "
                            f"k-means needs at least k frames (give more audio or a smaller --k)")
    config = KMeansConfig(k=args.k, batch_size=args.batch_size, n_init=args.n_init, max_iter=args.max_iter,
                          max_no_improvement=args.max_no_improvement, seed=args.seed)
    in_memory = features.nbytes_float32 <= args.fit_memory_gb * 2**30
    fit = "in-memory" if in_memory else "out-of-core"
    print(f"audiotok: k-means {fit} on {features.rows} frames x {features.dim} "
          f"({features.nbytes_float32 / 2**30:.2f} GiB as float32; --fit-memory-gb {args.fit_memory_gb:g})",
          file=sys.stderr)
    centroids = fit_kmeans(features.all(), config) if in_memory else fit_out_of_core(features, config)
    stats, counts = unit_usage((features.shard(i) for i in range(len(features))), centroids)
    hours = extracted.frames * FRAME_SECONDS / 3600
    record = TrainingRecord.create(spec, config, stats, frames=features.rows, hours=hours, files=extracted.files,
                                   data=args.data, percent=args.percent, fit=fit)
    write_centroids(args.output, centroids, record)
    print(f"audiotok: wrote {args.output}: k={args.k}, {features.rows} frames ({hours:.3f} h), "
          f"{stats.clusters_used}/{args.k} clusters used, perplexity {stats.perplexity:.1f}; "
          f"features cached in {extracted.folder} ({features.cache.size_bytes() / 2**20:.1f} MiB)", file=sys.stderr)
    plot = write_usage_plot(args.output, counts, stats)
    print(f"audiotok: cluster usage plot: {plot}" if plot else
          "audiotok: pip install 'audiotok[plot]' to also get a cluster-usage plot", file=sys.stderr)
    return 0
