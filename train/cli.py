"""Fit k-means units on speech: features from a frozen encoder at one layer, then MiniBatchKMeans.

Writes the centroids (.npy, float32, k x dim) and a JSON sidecar beside them (same name, .json)
that records the encoder, layer, k, data used and the fit's statistics; `audiotok export` reads it
to refuse centroids used with the wrong layer. With matplotlib installed (the [plot] extra) it also
draws the cluster usage beside them (same name, .usage.png).

Example: audiotok train --model logmel --k 100 -o units.npy speech/
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from audiotok.models import load_encoder
from audiotok.models.huggingface import NORMALIZE_CHOICES
from audiotok.runtime.audio import file_blocks
from audiotok.runtime.constants import FRAME_SECONDS
from audiotok.runtime.errors import AudioError, SettingsError

from .data import training_files
from .features import FeatureExtractor
from .kmeans import KMeansConfig, fit_kmeans, unit_usage
from .sidecar import TrainingRecord, write_centroids
from .usage_plot import write_usage_plot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="audio files and folders (searched recursively)")
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
                        help="use this percent of frames, sampled at random (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed for frame sampling and k-means")
    parser.add_argument("--batch-size", type=int, default=10_000, help="MiniBatchKMeans batch size")
    parser.add_argument("--n-init", type=int, default=20, help="k-means++ initialisations to try")
    parser.add_argument("--max-iter", type=int, default=100, help="k-means passes over the data at most")
    parser.add_argument("--max-no-improvement", type=int, default=100,
                        help="stop after this many mini-batches without inertia improvement")


def _check(args: argparse.Namespace) -> None:
    if args.k < 2:
        raise SettingsError(f"--k must be at least 2, got {args.k}")
    if not 0 < args.percent <= 100:
        raise SettingsError(f"--percent must be in (0, 100], got {args.percent}")
    if args.max_hours is not None and args.max_hours <= 0:
        raise SettingsError(f"--max-hours must be positive, got {args.max_hours}")
    if not args.output.endswith(".npy"):
        raise SettingsError(f"-o {args.output}: centroids are written as .npy; give a name ending in .npy")


def collect_features(extractor: FeatureExtractor, files, max_hours: float | None, percent: float,
                     seed: int) -> tuple[np.ndarray, float, int]:
    """Features of ``files`` (sampled to ``percent``), stopping at ``max_hours``; (features, hours, files)."""
    rng = np.random.default_rng(seed)
    budget = None if max_hours is None else int(max_hours * 3600 / FRAME_SECONDS)
    chunks, frames_seen, used, skipped = [], 0, 0, 0
    with tqdm(files, desc="features", unit="file", disable=None) as bar:
        for path in bar:
            try:
                feats = extractor.features(file_blocks(path))
            except AudioError as exc:  # one bad file in a corpus should not cost the whole run
                tqdm.write(f"audiotok: warning: skipped {exc}", file=sys.stderr)
                skipped += 1
                continue
            if budget is not None:
                feats = feats[: max(0, budget - frames_seen)]
            frames_seen += len(feats)
            used += 1
            if percent < 100:
                feats = feats[rng.random(len(feats)) < percent / 100]
            chunks.append(feats)
            bar.set_postfix(hours=f"{frames_seen * FRAME_SECONDS / 3600:.3f}")
            if budget is not None and frames_seen >= budget:
                break
    if skipped:
        print(f"audiotok: warning: skipped {skipped} unreadable file(s) of {len(files)}", file=sys.stderr)
    dim = extractor.encoder.spec.dim
    features = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return features, frames_seen * FRAME_SECONDS / 3600, used


def run(args: argparse.Namespace) -> int:
    _check(args)
    files = training_files(args.data)
    encoder = load_encoder(args.model, args.layer, args.normalize)
    spec = encoder.spec
    print(f"audiotok: {spec.name} ({spec.encoder_type}) layer {spec.layer}, dim {spec.dim}, "
          f"normalization {spec.normalization}; {len(files)} files", file=sys.stderr)
    features, hours, used = collect_features(FeatureExtractor(encoder), files, args.max_hours, args.percent,
                                             args.seed)
    if len(features) == 0:
        raise AudioError(f"no usable audio in {', '.join(args.data)}")
    if len(features) < args.k:
        raise SettingsError(f"only {len(features)} frames of audio for --k {args.k}: "
                            f"k-means needs at least k frames (give more audio or a smaller --k)")
    config = KMeansConfig(k=args.k, batch_size=args.batch_size, n_init=args.n_init, max_iter=args.max_iter,
                          max_no_improvement=args.max_no_improvement, seed=args.seed)
    centroids = fit_kmeans(features, config)
    stats, counts = unit_usage(features, centroids)
    record = TrainingRecord.create(spec, config, stats, frames=len(features), hours=hours,
                                   files=[str(f) for f in files[:used]], data=args.data,
                                   percent=args.percent)
    write_centroids(args.output, centroids, record)
    print(f"audiotok: wrote {args.output}: k={args.k}, {len(features)} frames ({hours:.3f} h), "
          f"{stats.clusters_used}/{args.k} clusters used, perplexity {stats.perplexity:.1f}", file=sys.stderr)
    plot = write_usage_plot(args.output, counts, stats)
    print(f"audiotok: cluster usage plot: {plot}" if plot else
          "audiotok: pip install 'audiotok[plot]' to also get a cluster-usage plot", file=sys.stderr)
    return 0
