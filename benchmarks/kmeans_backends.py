"""k-means backends on the same features: scikit-learn MiniBatchKMeans (audiotok's default) vs faiss.

Both fit the same float32 feature matrix, each in its own process (so peak memory is the fit's
own), with the settings `audiotok train` uses: MiniBatchKMeans with the GSLM recipe (batch 10 000,
20 k-means++ inits, up to 100 passes), faiss with audioTokenizer's (nredo 3, niter 20 + 10 log10 k
(+10 for dim >= 512), min 5 points per centroid, on max(256 k, 100 000) sampled vectors). Each
result is scored on every feature: inertia (sum of squared distances to the nearest centroid),
clusters used and unit perplexity (exp of the unit distribution's entropy; k at best).

Features come from an audiotok feature cache folder (--cache, made by `audiotok train`), an .npy
(--features), or are extracted here from audio (--audio, --model, --layer).

Examples:
  python benchmarks/kmeans_backends.py --audio speech/ --model logmel --k 100 1000
  python benchmarks/kmeans_backends.py --cache units/audiotok-features/0123abcd... --k 100 1000
  python benchmarks/kmeans_backends.py --smoke   # logmel features of 6 s of synthetic speech, k=8 (the suite)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BACKENDS = ("sklearn", "faiss")
# --smoke: logmel features of 2 x 3 s of audiotok's pseudo-speech probe signal (300 frames), k=8: the
# script's command line, child fits and table in seconds (the suite runs it), no number worth quoting.
SMOKE_FILES, SMOKE_SECONDS, SMOKE_K = 2, 3.0, 8


def smoke_audio(folder: Path) -> list[str]:
    import soundfile as sf

    from audiotok.export.probe_audio import pseudo_speech

    for i in range(SMOKE_FILES):
        sf.write(folder / f"smoke-{i}.wav", pseudo_speech(SMOKE_SECONDS, seed=i), 16_000)
    return [str(folder)]


def extract(audio: list[str], model: str, layer: int | None) -> np.ndarray:
    from audiotok.models import load_encoder
    from audiotok.models.features import FeatureExtractor
    from audiotok.runtime.audio.decode import file_blocks
    from audiotok.runtime.corpus.listing import list_corpus

    extractor = FeatureExtractor(load_encoder(model, layer, "auto"))
    return np.concatenate([extractor.features(file_blocks(f.path)) for f in list_corpus(audio)])


def from_cache(folder: Path) -> np.ndarray:
    shards = sorted(folder.glob("shard-*.npy"))
    if not shards:
        raise SystemExit(f"{folder}: no shard-*.npy files (give the cache folder that holds them)")
    return np.concatenate([np.load(p) for p in shards]).astype(np.float32)


def fit_child(features: Path, backend: str, k: int, seed: int, out: Path) -> None:
    """Runs in its own process: fit, save the centroids, print seconds and peak RSS as JSON."""
    data = np.load(features, mmap_mode="r")
    start = time.perf_counter()
    if backend == "faiss":
        from audiotok.train.faiss_kmeans import FaissConfig, fit_faiss

        centroids, details = fit_faiss(data, FaissConfig(k=k, seed=seed))
    else:
        from audiotok.train.kmeans import KMeansConfig, fit_kmeans

        centroids, details = fit_kmeans(np.asarray(data, np.float32), KMeansConfig(k=k, seed=seed)), {}
    seconds = time.perf_counter() - start
    np.save(out, centroids)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, **details}))


def run_fit(features: Path, backend: str, k: int, seed: int, folder: Path) -> tuple[dict, np.ndarray]:
    out = folder / f"{backend}-{k}.npy"
    child = subprocess.run([sys.executable, __file__, "--fit-child", backend, "--features", str(features),
                            "--k", str(k), "--seed", str(seed), "--centroids-out", str(out)],
                           capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if child.returncode != 0:
        raise SystemExit(f"{backend} k={k} failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]), np.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", nargs="+", default=None, help="audio files or folders to extract features from")
    parser.add_argument("--model", default="logmel", help="encoder for --audio")
    parser.add_argument("--layer", type=int, default=None, help="layer for --audio")
    parser.add_argument("--cache", type=Path, default=None, help="an audiotok feature cache folder")
    parser.add_argument("--features", type=Path, default=None, help="a [frames, dim] .npy")
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--smoke", action="store_true",
                        help=f"k={SMOKE_K} on logmel features of {SMOKE_FILES} x {SMOKE_SECONDS:g} s of synthetic "
                             "speech (unless --audio, --cache or --features): checks the script in seconds (the suite)")
    parser.add_argument("--fit-child", choices=BACKENDS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--centroids-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_child:
        fit_child(args.features, args.fit_child, args.k[0], args.seed, args.centroids_out)
        return

    from audiotok.train.kmeans import unit_usage

    if args.smoke:
        args.k = [SMOKE_K]
    with tempfile.TemporaryDirectory(prefix="kmeans-bench-") as tmp:
        folder = Path(tmp)
        if args.smoke and not (args.features or args.cache or args.audio):
            (folder / "audio").mkdir()
            args.audio, args.model, args.layer = smoke_audio(folder / "audio"), "logmel", None
        if args.features is not None:
            features = np.load(args.features).astype(np.float32)
        elif args.cache is not None:
            features = from_cache(args.cache)
        elif args.audio:
            features = extract(args.audio, args.model, args.layer)
        else:
            raise SystemExit("give --audio, --cache or --features")
        path = folder / "features.npy"
        np.save(path, features)
        print(f"features: {features.shape[0]} frames x {features.shape[1]} "
              f"({features.shape[0] * 0.02 / 60:.1f} min of audio); load average {os.getloadavg()[0]:.2f}",
              file=sys.stderr)
        rows = []
        for k in args.k:
            for backend in BACKENDS:
                measured, centroids = run_fit(path, backend, k, args.seed, folder)
                stats, _ = unit_usage(features, centroids)
                rows.append({"k": k, "backend": backend, **measured, "inertia": stats.inertia,
                             "mean_squared_distance": stats.mean_squared_distance,
                             "clusters_used": stats.clusters_used, "perplexity": stats.perplexity})
                print(f"k={k} {backend}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print(f"| k | backend | fit time (s) | peak RSS (MiB) | inertia / frame | clusters used | unit perplexity |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['backend']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
              f"{r['mean_squared_distance']:.3f} | {r['clusters_used']} | {r['perplexity']:.1f} |")
    print(f"\nload average after the run: {open('/proc/loadavg').read().split()[:3]}")
    if args.json:
        args.json.write_text(json.dumps({"frames": int(features.shape[0]), "dim": int(features.shape[1]),
                                         "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
