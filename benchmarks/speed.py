"""Speed, size and fidelity of audiotok bundles against plain torch + transformers, in one run.

Builds a HuBERT-base-size checkpoint with random weights (``HubertModel(HubertConfig())`` and a
``Wav2Vec2FeatureExtractor(do_normalize=False)``, saved to --workdir), fits k=500 centroids on its
features of a synthetic speech-like signal at each layer, exports an fp32 and an int8 bundle
(and fp16 when onnxruntime has a CUDA provider), then measures side by side:

  torch full   the plain transformers way: model(x, output_hidden_states=True).hidden_states[L],
               then a numpy argmin over the centroid distances
  torch cut    the same, with the model cut after layer L (later layers never computed)
  fp32 / int8  audiotok's Tokenizer.tokenize(samples) on the bundle (onnxruntime, CPU)
  fp16         the same on CUDA, only where a CUDA provider exists
  int8+cnn     what-if, not a product variant: int8 with every group quantized, including the CNN
               convolutions that `audiotok export` kept in fp32 because they cost too much agreement

Every timed run is a fresh process that holds that path alone: it loads the model or bundle,
runs the input once to warm up, times one more run, reports its peak RSS and exits before the
next starts. An earlier version kept one resident worker per path and timed them in turn; that
slowed torch by 1.5x against the same model timed alone (docs/speed.md: "Timing each path
alone") while the bundles' times did not move, which inflated the bundles' ratios. Runs are
interleaved round-robin (the starting path rotates each round) so that load from other
processes hits every path alike; torch and onnxruntime get the same --threads. RTF and the
speed-up ratios use median times; "best runs" divides the fastest run of each path, and "CPU
time" the median process CPU seconds (all threads), the steadier estimates when other processes
share the CPUs (the footer prints the load average). --table-from re-prints a --json file.
"agreement" is the fraction of frames whose unit equals the torch cut model's on the same windows.
Random weights have the real compute but not a trained model's robustness: measure a real
bundle's agreement with `audiotok verify`.

Examples (print a markdown table; the first run builds and exports everything into --workdir):
  python benchmarks/speed.py --layers 6 --seconds 30 --rounds 9 --threads 2 --no-what-if   # docs/precision-and-speed.md's table
  python benchmarks/speed.py --layers 6 9 12 --seconds 10 30 60 --rounds 5 --threads 2
  python benchmarks/speed.py --smoke --threads 1   # tiny model, seconds: checks the script itself (the suite)
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

SAMPLE_RATE = 16_000
K = 500
KMEANS_SECONDS = 60.0  # synthetic audio the centroids are fitted on (3000 frames)
INPUT_SEED = 1234  # benchmark input; differs from the export's parity/calibration audio (seeds 0-2)
PAUSE_S = 0.2  # between runs, so one path's idle threads never overlap the next path's run
PATHS = ("torch full", "torch cut", "fp32", "int8", "int8+cnn", "fp16")
# --smoke: a 2-layer, 32-dim HuBERT layout cut at layer 2 with k=16, one 2 s input, one round: the
# script's workers, table and footer in seconds (the suite runs it), no number worth quoting.
SMOKE_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
SMOKE_LAYER, SMOKE_K, SMOKE_SECONDS, SMOKE_KMEANS_SECONDS = 2, 16, 2.0, 10.0


# ----------------------------------------------------------------------------- setup (coordinator)

def build_checkpoint(folder: Path, config: dict | None = None) -> Path:
    """A random-weight HuBERT checkpoint: HuBERT-base size, or ``config``'s layout."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    HubertModel(HubertConfig(**(config or {}))).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(folder)
    return folder


def build_centroids(checkpoint: Path, layer: int, target: Path, k: int = K,
                    seconds: float = KMEANS_SECONDS) -> Path:
    if target.exists():
        return target
    import torch
    from sklearn.cluster import KMeans

    from audiotok.export.probe_audio import pseudo_speech
    from audiotok.models import load_encoder
    from audiotok.models.features import FeatureExtractor

    torch.set_num_threads(2)
    audio = np.concatenate([pseudo_speech(10.0, seed=100 + i) for i in range(int(seconds / 10))])
    features = FeatureExtractor(load_encoder(str(checkpoint), layer)).features([audio])
    centroids = KMeans(k, n_init=1, max_iter=50, random_state=0).fit(features).cluster_centers_
    np.save(target, centroids.astype(np.float32))
    return target


def build_bundle(checkpoint: Path, centroids: Path, layer: int, precision: str, target: Path) -> Path:
    if target.exists():
        return target
    from audiotok.export.bundle import ExportConfig, export_bundle

    config = ExportConfig(model=str(checkpoint), centroids=str(centroids), output=str(target), layer=layer,
                          precision=precision, min_agreement=0.0)
    print(f"exporting {target.name} ...", file=sys.stderr, flush=True)
    export_bundle(config)
    return target


def build_int8_all_groups(fp32_bundle: Path, int8_bundle: Path, target: Path) -> Path:
    """The what-if graph: the quantizer's every group, whatever it costs in agreement."""
    if target.exists():
        return target

    import onnx

    from audiotok.export.onnx_graph import attach_manifest
    from audiotok.export.probe_audio import pseudo_speech
    from audiotok.export.quantize import build_int8, operator_groups
    from audiotok.runtime.bundle.session import open_session

    print(f"quantizing {target.name} ...", file=sys.stderr, flush=True)
    groups = operator_groups(onnx.load(str(fp32_bundle)))
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "all.onnx"
        build_int8(fp32_bundle, graph, groups, [pseudo_speech(10.0, seed=i) for i in range(3)])
        attach_manifest(graph, target, open_session(int8_bundle)[1])
    return target


def inputs(workdir: Path, seconds: list[float]) -> dict[float, Path]:
    from audiotok.export.probe_audio import pseudo_speech

    paths = {}
    for s in seconds:
        paths[s] = workdir / f"input-{s:g}s.npy"
        if not paths[s].exists():
            np.save(paths[s], pseudo_speech(s, seed=INPUT_SEED))
    return paths


# ----------------------------------------------------------------------------- workers

def _argmin_units(hidden: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid with numpy, the way a plain transformers user would write it."""
    distances = (centroids * centroids).sum(1) - 2.0 * hidden @ centroids.T
    return distances.argmin(-1).astype(np.int64)


def _torch_worker(kind: str, checkpoint: str, centroids: np.ndarray, layer: int):
    import torch

    from audiotok.runtime.windowing import OFFLINE_POLICY
    from audiotok.runtime.windowing import Windower

    started = time.perf_counter()
    if kind == "torch full":
        from transformers import HubertModel

        model = HubertModel.from_pretrained(checkpoint).eval()

        def hidden(x: torch.Tensor) -> torch.Tensor:
            return model(x, output_hidden_states=True).hidden_states[layer]
    else:
        from audiotok.models import load_encoder

        model = load_encoder(checkpoint, layer, "no")
        hidden = model
    load_s = time.perf_counter() - started

    @torch.no_grad()
    def units(samples: np.ndarray) -> np.ndarray:
        return _argmin_units(hidden(torch.from_numpy(samples)[None])[0].numpy(), centroids)

    def same_windows(samples: np.ndarray) -> np.ndarray:
        windower = Windower(OFFLINE_POLICY, units)
        pieces = [u for _, u in windower.push(samples)] + [u for _, u in windower.finish()]
        return np.concatenate(pieces)

    return load_s, units, same_windows


def _bundle_worker(bundle: str, providers: list[str], threads: int):
    from audiotok.runtime.tokenizer import Tokenizer

    started = time.perf_counter()
    tokenizer = Tokenizer(bundle, providers=providers, threads=threads)
    load_s = time.perf_counter() - started

    def units(samples: np.ndarray) -> np.ndarray:
        return tokenizer.tokenize(samples, sample_rate=SAMPLE_RATE)

    return load_s, units, units


def peak_rss_mb() -> float:
    """This process image's peak resident set (VmHWM). getrusage's ru_maxrss would include the
    parent's peak from before exec, which is the coordinator's (it exports the bundles)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best available


def worker(args: argparse.Namespace) -> None:
    """One timed path in a fresh process: load, one warm-up pass, one timed pass; one JSON line.

    Nothing else of the benchmark lives in this process, and no other path's process is alive
    while it runs, so each path is timed as it runs alone: no idle thread pools of other
    runtimes, no allocator state or warm caches left by earlier runs of other shapes.
    """
    if args.kind.startswith("torch"):
        import torch

        torch.set_num_threads(args.threads)
        load_s, timed, reference = _torch_worker(args.kind, args.checkpoint, np.load(args.centroids), args.layer)
    else:
        providers = ["cuda"] if args.kind == "fp16" else ["cpu"]  # int8, int8+cnn, fp32: CPU
        load_s, timed, reference = _bundle_worker(args.bundle, providers, args.threads)
    samples = np.load(args.input)
    timed(samples)  # warm-up: one-time allocations, kernel selection, page faults of the weights
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    timed(samples)
    reply = {"load_s": load_s, "wall": time.perf_counter() - start_wall, "cpu": time.process_time() - start_cpu,
             "rss_mb": peak_rss_mb()}
    if args.units_out:  # after the timing, so it never affects it
        np.save(args.units_out, reference(samples))
    print(json.dumps(reply), flush=True)


def run_alone(kind: str, layer: int, threads: int, checkpoint: Path, centroids: Path, bundle: Path | None,
              audio: Path, units_out: Path | None = None) -> dict:
    """Time one path in its own fresh process (see :func:`worker`)."""
    command = [sys.executable, __file__, "--worker", kind, "--layer", str(layer), "--threads", str(threads),
               "--checkpoint", str(checkpoint), "--centroids", str(centroids), "--bundle", str(bundle or ""),
               "--input", str(audio), "--units-out", str(units_out or "")]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"benchmark worker {kind!r} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- measurement

def measure_layer(layer: int, args: argparse.Namespace, workdir: Path, audio: dict[float, Path]) -> list[dict]:
    import onnxruntime as ort

    if args.smoke:
        checkpoint = build_checkpoint(workdir / "hubert-tiny-random", SMOKE_CONFIG)
        centroids = build_centroids(checkpoint, layer, workdir / f"centroids-L{layer}.npy", SMOKE_K,
                                    SMOKE_KMEANS_SECONDS)
    else:
        checkpoint = build_checkpoint(workdir / "hubert-base-random")
        centroids = build_centroids(checkpoint, layer, workdir / f"centroids-L{layer}.npy")
    precisions = ["fp32", "int8"] + (["fp16"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    bundles = {p: build_bundle(checkpoint, centroids, layer, p, workdir / f"hubert-L{layer}-{p}.onnx")
               for p in precisions}
    if args.what_if:
        bundles["int8+cnn"] = build_int8_all_groups(bundles["fp32"], bundles["int8"],
                                                     workdir / f"hubert-L{layer}-int8-all.onnx")
    kinds = ["torch full", "torch cut", *bundles]
    weights = sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))
    rows = []
    for seconds in sorted(audio):
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        units = {k: workdir / f"units-L{layer}-{seconds:g}s-{k.replace(' ', '-')}.npy" for k in kinds}
        for r in range(args.rounds):
            for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                runs[k].append(run_alone(k, layer, args.threads, checkpoint, centroids, bundles.get(k),
                                         audio[seconds], units[k] if r == 0 else None))
                print(f"L{layer} {seconds:g} s round {r + 1}/{args.rounds} {k}: {runs[k][-1]['wall']:.3f} s",
                      file=sys.stderr, flush=True)
                time.sleep(PAUSE_S)
        expected = np.load(units["torch cut"])
        for k in kinds:
            got = np.load(units[k])
            times = [run["wall"] for run in runs[k]]
            rows.append({
                "layer": layer, "seconds": seconds, "path": k, "median_s": float(np.median(times)),
                "times": times, "cpu_times": [run["cpu"] for run in runs[k]],
                "load_s": float(np.median([run["load_s"] for run in runs[k]])),
                "rss_mb": max(run["rss_mb"] for run in runs[k]),
                "file_mb": (bundles[k].stat().st_size if k in bundles else weights) / 1e6,
                "agreement": float((got == expected).mean()) if got.shape == expected.shape else float("nan"),
            })
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| layer | input | path | RTF | x torch cut | x torch full | x torch cut, best runs "
             "| x torch cut, CPU time | load s | peak RSS MB | file MB | agreement |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        same = [r for r in rows if r["layer"] == row["layer"] and r["seconds"] == row["seconds"]]
        base = {r["path"]: r["median_s"] for r in same}
        best = {r["path"]: min(r["times"]) for r in same}
        cpu = {r["path"]: float(np.median(r["cpu_times"])) for r in same}
        lines.append(
            f"| {row['layer']} | {row['seconds']:g} s | {row['path']} | {row['median_s'] / row['seconds']:.3f} | "
            f"{base['torch cut'] / row['median_s']:.2f} | {base['torch full'] / row['median_s']:.2f} | "
            f"{best['torch cut'] / best[row['path']]:.2f} | {cpu['torch cut'] / cpu[row['path']]:.2f} | "
            f"{row['load_s']:.2f} | {row['rss_mb']:.0f} | {row['file_mb']:.1f} | {row['agreement']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 9, 12])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--rounds", type=int, default=9,
                        help="fresh processes per path and input, each one warm-up and one timed run (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and onnxruntime alike")
    parser.add_argument("--workdir", default=None,
                        help="checkpoint, centroids, bundles (reused; default: benchmark-work, with --smoke a new "
                             "temporary folder)")
    parser.add_argument("--json", default=None, help="also write every measurement here")
    parser.add_argument("--table-from", default=None, metavar="JSON",
                        help="print the table of an earlier run's --json file and exit")
    parser.add_argument("--no-what-if", dest="what_if", action="store_false",
                        help="skip the int8+cnn what-if row")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny model at layer {SMOKE_LAYER}, k={SMOKE_K}, one {SMOKE_SECONDS:g} s input, one "
                             "round: checks the script in seconds (the suite); overrides --layers, --seconds, --rounds")
    parser.add_argument("--worker", default=None, choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--layer", type=int, default=6, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--centroids", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--units-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.kind = args.worker
        worker(args)
        return
    if args.table_from:
        print(table(json.loads(Path(args.table_from).read_text())))
        return
    if args.smoke:
        args.layers, args.seconds, args.rounds = [SMOKE_LAYER], [SMOKE_SECONDS], 1
    if args.workdir is None:
        args.workdir = tempfile.mkdtemp(prefix="audiotok-speed-") if args.smoke else "benchmark-work"
    workdir = Path(args.workdir) / ("smoke" if args.smoke else "")  # a tiny model never mixes with a real one
    workdir.mkdir(parents=True, exist_ok=True)
    audio = inputs(workdir, args.seconds)
    load_before = os.getloadavg()[0]
    started = time.time()
    rows = [row for layer in args.layers for row in measure_layer(layer, args, workdir, audio)]
    print(table(rows))
    print(f"\n{os.cpu_count()} CPUs, threads={args.threads}, rounds={args.rounds}; load average "
          f"{load_before:.2f} before and {os.getloadavg()[0]:.2f} after ({time.time() - started:.0f} s): "
          f"a load above the thread count means other processes competed for the CPUs.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
