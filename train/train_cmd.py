"""Fit k-means units on speech: features from a frozen encoder at one layer, then MiniBatchKMeans.

Writes the centroids (.npy, float32, k x dim) and a JSON sidecar beside them (same name, .json)
that records the encoder, layer, k, data used and the fit's statistics; `audiotok export` reads it
to refuse centroids used with the wrong layer. With matplotlib installed (the [plot] extra) it also
draws the cluster usage beside them (same name, .usage.png).

Features are first written to a cache of float16 shards (--cache, default: audiotok-features/ beside
the centroids, keyed by encoder, layer and file list): a crashed run started again extracts only the
missing shards, and other --k values on the same data reuse them. k-means then runs in memory with
scikit-learn's MiniBatchKMeans (GSLM settings) when the features fit in --fit-memory-gb as float32,
else out of core (partial_fit over the shards, one shard in memory at a time). --kmeans faiss
clusters a sample of the cache with faiss instead, with audioTokenizer's settings (train/faiss_kmeans.py).

Examples:
  audiotok train --model logmel --k 100 -o units.npy speech/
  audiotok train --model facebook/hubert-base-ls960 --layer 6 --k 500 --percent 10 -o hubert6-500.npy \
      @librispeech-960.tsv --jobs 2
  audiotok train --model ./hubert-base --k 500 -o units.npy corpus/ --engine ray --ray-address auto

The audioTokenizer way (mHuBERT-147, last layer, faiss; the centroids' sidecar records the options
and `audiotok export` gives the bundle the same channel and frame rule):
  audiotok train --model utter-project/mHuBERT-147 --layer 12 --k 500 -o mhubert-500.npy data/ --kmeans faiss \
      --channel 0 --trim-silence 30 --pad-last-frame --max-frames-total 1000000 --write-faiss-index
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from audiotok.models import load_encoder
from audiotok.models.huggingface import NORMALIZE_CHOICES
from audiotok.models.vocabulary_sidecar import (TrainingRecord, is_sidecar, is_sidecar_head, sidecar_path,
                                                stage_centroids)
from audiotok.runtime.commands.options import add_engine_arguments
from audiotok.runtime.commands.numbers import MAX_LAYER, SEED_MAX, integer, number
from audiotok.runtime.bundle.manifest import MAX_K
from audiotok.runtime.constants import FRAME_SECONDS
from audiotok.runtime.corpus.engine import check_engine_options
from audiotok.runtime.errors import AudioError, SettingsError
from audiotok.runtime.corpus.listing import CorpusFile
from audiotok.runtime.formats.collisions import Place, check_apart, input_places, list_arguments
from audiotok.runtime.formats.file_set import FileSet, remove_leftovers
from audiotok.runtime.formats.side_files import check_side_file
from audiotok.runtime.formats.staging import check_target
from audiotok.runtime.plotting.canvas import is_audiotok_png
from audiotok.runtime.audio.preprocess import CHANNEL_MEAN, FEATURE_NORMS, parse_channel, parse_trim_db

from .training_files import training_files
from .extract import ExtractionConfig, extract
from .feature_cache import DEFAULT_CACHE_NAME
from .faiss_kmeans import (FAISS_FLAT_L2_MAGIC, FaissConfig, default_sample, faiss_index_path, fit_faiss,
                           import_faiss, sample_rows, write_faiss_index_to)
from .feature_cache import CachedFeatures
from .kmeans import KMeansConfig, fit_kmeans, unit_usage
from .out_of_core import fit_out_of_core
from .usage_plot import stage_usage_plot, usage_plot_path

DEFAULT_FIT_MEMORY_GB = 4.0
DEFAULT_SHARD_MINUTES = 10.0
KMEANS_BACKENDS = ("sklearn", "faiss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="audio files, folders (searched recursively), or @list.tsv (a file list)")
    parser.add_argument("--model", default="logmel",
                        help="'logmel' (built in, no download), a hub id such as facebook/hubert-base-ls960, "
                             "or a local transformers folder")
    parser.add_argument("--layer", type=integer("--layer", low=0, high=MAX_LAYER), default=None,
                        help="hidden_states index to cluster (default: 6, or the last layer if fewer)")
    parser.add_argument("--k", type=integer("--k", high=MAX_K),
                        required=True, help="number of units (e.g. 50, 100, 200, 500)")
    parser.add_argument("-o", "--output", required=True, help="centroids .npy to write (sidecar: same name, .json)")
    parser.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="auto",
                        help="waveform normalization; auto reads the checkpoint's feature extractor")
    parser.add_argument("--max-hours", type=number("--max-hours"),
                        default=None, help="stop reading audio after this many hours")
    parser.add_argument("--percent", type=number("--percent"), default=100.0,
                        help="use this percent of frames, sampled at random (seeded per file)")
    parser.add_argument("--seed", type=integer("--seed", low=0, high=SEED_MAX),
                        default=0, help="seed for frame sampling and k-means")
    parser.add_argument("--batch-size", type=integer("--batch-size", low=1),
                        default=10_000, help="MiniBatchKMeans batch size")
    parser.add_argument("--n-init", type=integer("--n-init", low=1, high=10_000),
                        default=20, help="k-means++ initialisations to try")
    parser.add_argument("--max-iter", type=integer("--max-iter", low=1),
                        default=100, help="k-means passes over the data at most")
    parser.add_argument("--max-no-improvement", type=integer("--max-no-improvement", low=1), default=100,
                        help="stop after this many mini-batches without inertia improvement")
    parser.add_argument("--cache", default=None,
                        help=f"feature cache folder (default: {DEFAULT_CACHE_NAME}/ beside the centroids)")
    parser.add_argument("--shard-minutes", type=number("--shard-minutes"), default=DEFAULT_SHARD_MINUTES,
                        help="audio per cache shard: the unit of resumption and of parallel work")
    parser.add_argument("--fit-memory-gb", type=number("--fit-memory-gb"), default=DEFAULT_FIT_MEMORY_GB,
                        help="fit in memory when the features take at most this much as float32, "
                             "else out of core (0: always out of core)")
    add_engine_arguments(parser, workers="extraction workers, each with its own encoder",
                         threads="torch threads per worker (default: cores // jobs locally, 1 per Ray actor)")
    pre = parser.add_argument_group("processor options (audioTokenizer's: --channel 0 --trim-silence 30 "
                                    "--pad-last-frame)")
    pre.add_argument("--channel", default=CHANNEL_MEAN,
                     help="multichannel files: 'mean' mixes all channels, N takes channel N alone (0 is the first)")
    pre.add_argument("--trim-silence", default=None, metavar="DB",
                     help="drop leading and trailing audio quieter than DB below the loudest part, as librosa's "
                          "trim(top_db=DB) (default: no trim)")
    pre.add_argument("--pad-last-frame", action="store_true",
                     help="zero-pad a partial last frame to a full one; recorded beside the centroids, so "
                          "export gives the bundle the same frame rule")
    pre.add_argument("--feature-norm", choices=FEATURE_NORMS, default="none",
                     help="l2: cluster L2-normalised features; export normalises inside the graph too")
    caps = parser.add_argument_group("frame caps (seeded random subsampling)")
    caps.add_argument("--max-frames-file", type=integer("--max-frames-file"), default=None, metavar="N",
                      help="keep at most N frames of each file (default: all)")
    caps.add_argument("--max-frames-total", type=integer("--max-frames-total"), default=None, metavar="N",
                      help="fit k-means on at most N frames of the whole cache (default: all)")
    km = parser.add_argument_group("k-means backend")
    km.add_argument("--kmeans", choices=KMEANS_BACKENDS, default="sklearn",
                    help="sklearn: MiniBatchKMeans (GSLM settings; out of core when large); faiss: faiss.Clustering "
                         "with audioTokenizer's settings on a sample (needs audiotok[faiss])")
    km.add_argument("--faiss-niter", type=integer("--faiss-niter", low=1, high=100_000), default=None,
                    help="faiss iterations (default: 20 + 10 log10(k), +10 for dim >= 512, +10 from 2M vectors, "
                         "clipped to [30, 150])")
    km.add_argument("--faiss-nredo", type=integer("--faiss-nredo", low=1, high=10_000),
                    default=3, help="faiss runs; the lowest objective wins")
    km.add_argument("--faiss-min-points", type=integer("--faiss-min-points", low=1),
                    default=5, help="faiss min_points_per_centroid")
    km.add_argument("--faiss-sample", type=integer("--faiss-sample", low=1), default=None,
                    help="vectors sampled from the cache for faiss (default: max(256 k, 100000))")
    km.add_argument("--write-faiss-index", action="store_true",
                    help="also write NAME.kmeans_faiss.index (a faiss IndexFlatL2 of the centroids) beside "
                         "NAME.npy, for audioTokenizer's scripts (needs audiotok[faiss])")


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
    args.channel = parse_channel(args.channel)
    args.trim_silence = parse_trim_db(args.trim_silence)
    for name in ("max_frames_file", "max_frames_total"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.max_frames_total is not None and args.max_frames_total < args.k:
        raise SettingsError(f"--max-frames-total {args.max_frames_total} is below --k {args.k}: "
                            f"k-means needs at least k frames")
    if args.kmeans == "faiss" or args.write_faiss_index:
        import_faiss()
    if args.kmeans == "faiss":
        faiss_config(args).check()


def faiss_config(args: argparse.Namespace) -> FaissConfig:
    return FaissConfig(k=args.k, niter=args.faiss_niter, nredo=args.faiss_nredo,
                       min_points_per_centroid=args.faiss_min_points, sample=args.faiss_sample, seed=args.seed)


def fit(args: argparse.Namespace, features: CachedFeatures) -> tuple[np.ndarray, KMeansConfig | FaissConfig, str]:
    """Centroids from the chosen backend, on at most --max-frames-total rows; and how they were fitted."""
    capped = args.max_frames_total is not None and features.rows > args.max_frames_total
    data = sample_rows(features, args.max_frames_total, args.seed) if capped else features
    rows = len(data) if capped else features.rows
    if args.kmeans == "faiss":
        config = faiss_config(args)
        print(f"audiotok: faiss k-means on {min(rows, config.sample or default_sample(args.k))} of {rows} frames "
              f"x {features.dim}", file=sys.stderr)
        centroids, _ = fit_faiss(data, config)
        return centroids, config, "faiss"
    config = KMeansConfig(k=args.k, batch_size=args.batch_size, n_init=args.n_init, max_iter=args.max_iter,
                          max_no_improvement=args.max_no_improvement, seed=args.seed)
    in_memory = capped or features.nbytes_float32 <= args.fit_memory_gb * 2**30
    how = "in-memory" if in_memory else "out-of-core"
    print(f"audiotok: k-means {how} on {rows} frames x {features.dim} "
          f"({rows * features.dim * 4 / 2**30:.2f} GiB as float32; --fit-memory-gb {args.fit_memory_gb:g})",
          file=sys.stderr)
    if not in_memory:
        return fit_out_of_core(features, config), config, how
    return fit_kmeans(data if capped else features.all(), config), config, how


def _side_outputs(args: argparse.Namespace) -> list[tuple[Path, str, Callable[[bytes], bool]]]:
    """The files written beside the centroids: (path, what it is, how audiotok's own is recognised)."""
    sides = [(sidecar_path(args.output), "a centroids sidecar", is_sidecar)]
    if importlib.util.find_spec("matplotlib") is not None:
        sides.append((usage_plot_path(args.output), "a usage plot", is_audiotok_png))
    if args.write_faiss_index:
        sides.append((faiss_index_path(args.output), "a faiss index", lambda b: b.startswith(FAISS_FLAT_L2_MAGIC)))
    return sides


# What a staged (possibly cut short) file of each output starts with: how a killed run's leftovers are known.
LEFTOVER_HEADS: dict[str, Callable[[bytes], bool]] = {
    "centroids": lambda head: head.startswith(b"\x93NUMPY"), "a centroids sidecar": is_sidecar_head,
    "a usage plot": lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
    "a faiss index": lambda head: head.startswith(FAISS_FLAT_L2_MAGIC)}


def _check_outputs(args: argparse.Namespace, cache_root: Path, files: list[CorpusFile]) -> None:
    """Before any work: -o and its side files must be new or audiotok's own and none of them an input,
    the cache a folder that holds no input; a killed run's leftovers beside them are removed."""
    sides = _side_outputs(args)
    if cache_root.exists() and not cache_root.is_dir():
        raise SettingsError(f"--cache {cache_root}: exists and is not a folder")
    out = f"-o {args.output}"
    inputs = [*list_arguments(args.data), *input_places("the input", (f.path for f in files))]
    if Path(args.model).is_dir():  # a checkpoint folder is read whole: nothing may be written inside it
        inputs.append(Place(f"the checkpoint folder {args.model}", Path(args.model), folder=True))
    check_apart([Place(out, Path(args.output)), *(Place(f"{p} (beside {out})", p) for p, _, _ in sides),
                 Place(f"the feature cache {cache_root}", cache_root, folder=True)], inputs)
    check_target(args.output)
    for path, what, is_ours in sides:
        check_target(path)
        if what != "a faiss index":  # an index of another run is replaced like the centroids themselves
            check_side_file(path, is_ours, what)
    for path, what in [(Path(args.output), "centroids"), *((p, what) for p, what, _ in sides)]:
        remove_leftovers(path, LEFTOVER_HEADS[what])


def run(args: argparse.Namespace) -> int:
    _check(args)
    cache_root = Path(args.cache) if args.cache else Path(args.output).parent / DEFAULT_CACHE_NAME
    files = training_files(args.data)
    _check_outputs(args, cache_root, files)
    encoder = load_encoder(args.model, args.layer, args.normalize)
    spec = encoder.spec
    print(f"audiotok: {spec.name} ({spec.encoder_type}) layer {spec.layer}, dim {spec.dim}, "
          f"normalization {spec.normalization}; {len(files)} files", file=sys.stderr)
    extracted = extract(files, encoder, ExtractionConfig(
        model=args.model, layer=args.layer, normalize=args.normalize, cache_root=cache_root,
        percent=args.percent, seed=args.seed, max_hours=args.max_hours, shard_seconds=args.shard_minutes * 60,
        engine=args.engine, jobs=args.jobs, threads=args.threads, ray_address=args.ray_address,
        channel=args.channel, trim_db=args.trim_silence, pad_last_frame=args.pad_last_frame,
        feature_norm=args.feature_norm, max_frames_file=args.max_frames_file))
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
    centroids, config, how = fit(args, features)
    stats, counts = unit_usage((features.shard(i) for i in range(len(features))), centroids)
    hours = extracted.frames * FRAME_SECONDS / 3600
    index = faiss_index_path(args.output) if args.write_faiss_index else None
    record = TrainingRecord.create(
        spec, config, stats, frames=features.rows, hours=hours, files=extracted.files, data=args.data,
        percent=args.percent, fit=how, backend=args.kmeans, channel=args.channel, trim_silence_db=args.trim_silence,
        frame_rule="pad" if args.pad_last_frame else "floor", feature_norm=args.feature_norm,
        max_frames_file=args.max_frames_file, max_frames_total=args.max_frames_total,
        faiss_index=None if index is None else index.name)
    with FileSet() as outputs:  # visible together or not at all; the sidecar (naming the centroids' hash) last
        if index is not None:
            write_faiss_index_to(outputs.stage(index), centroids)
        plot = stage_usage_plot(outputs, args.output, counts, stats)
        stage_centroids(outputs, args.output, centroids, record)
    if index is not None:
        print(f"audiotok: wrote {index} (faiss IndexFlatL2 of the centroids)", file=sys.stderr)
    print(f"audiotok: wrote {args.output}: k={args.k}, {features.rows} frames ({hours:.3f} h), "
          f"{stats.clusters_used}/{args.k} clusters used, perplexity {stats.perplexity:.1f}; "
          f"features cached in {extracted.folder} ({features.cache.size_bytes() / 2**20:.1f} MiB)", file=sys.stderr)
    print(f"audiotok: cluster usage plot: {plot}" if plot else
          "audiotok: pip install 'audiotok[plot]' to also get a cluster-usage plot", file=sys.stderr)
    return 0
