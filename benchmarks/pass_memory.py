"""Peak memory of one encoder pass per input length, and what windows cost in agreement.

For a HuBERT-base-size checkpoint (``HubertModel(HubertConfig())``, random weights, layer 6; built,
fitted and exported by benchmarks/speed.py's helpers into --workdir) and each length in --seconds,
each in its own fresh process so that its peak RSS (VmHWM) is that run's alone:

  one pass   audiotok's fp32 bundle with ``Tokenizer(..., max_pass_seconds=S)``: the whole input in
             one onnxruntime run (exactly the reference units)
  windowed   the same bundle with the default 30 s limit: 30 s windows, 3 s of context each side
  torch      plain transformers on the whole input: ``model(x, output_hidden_states=True)``

"peak" is the process's peak RSS; "+pass" subtracts the RSS after loading the model, so it is the
memory the pass itself needed. "agreement" is the fraction of frames where the windowed units equal
the one-pass units. The input is a synthetic speech-like signal (export/probe_audio.py), a few
samples off the frame grid. Attention memory grows with the square of the length: a length whose
predicted peak (a quadratic through the lengths measured before it) exceeds --max-gb or 70% of the
memory available now is not run; the table says so, and the command to run it where it fits.

Example (prints a markdown table; the first run builds and exports into --workdir):
  python benchmarks/pass_memory.py --seconds 30 60 120 300 --threads 2
  python benchmarks/pass_memory.py --smoke --threads 1   # tiny model, seconds: checks the script (the suite)

--smoke builds benchmarks/speed.py --smoke's tiny model (the same files: pass one --workdir to both to build
it once) and runs one 32 s input: past the 30 s limit, so the windowed path cuts it in two windows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import (SMOKE_CONFIG, SMOKE_K, SMOKE_KMEANS_SECONDS, SMOKE_LAYER, build_bundle,  # noqa: E402
                   build_centroids, build_checkpoint, peak_rss_mb)

SAMPLE_RATE = 16_000
LAYER = 6
OFF_GRID = -197  # samples off whole seconds: the input ends 43 samples after its last frame
INPUT_SEED = 1234
SMOKE_SECONDS = 32.0  # just past the default 30 s pass: the windowed path runs two windows


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def available_gb() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 2**20


# ----------------------------------------------------------------------------- workers (one per run)

def worker(args: argparse.Namespace) -> None:
    samples = np.load(args.input, mmap_mode="r")[: args.length]
    samples = np.array(samples, dtype=np.float32)
    if args.path == "torch":
        import torch
        from transformers import HubertModel

        torch.set_num_threads(args.threads)
        model = HubertModel.from_pretrained(args.checkpoint).eval()
        loaded = rss_mb()
        start = time.perf_counter()
        with torch.no_grad():
            model(torch.from_numpy(samples)[None], output_hidden_states=True).hidden_states[args.layer]
        units = None
    else:
        from audiotok.runtime import Tokenizer

        limit = args.length / SAMPLE_RATE if args.path == "one pass" else None
        tokenizer = Tokenizer(args.bundle, threads=args.threads, max_pass_seconds=limit)
        loaded = rss_mb()
        start = time.perf_counter()
        units = tokenizer.tokenize(samples, sample_rate=SAMPLE_RATE)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    if units is not None:
        np.save(args.units, units)
    print(json.dumps({"peak_mb": peak, "loaded_mb": loaded, "seconds": seconds}))


def run_worker(path: str, length: int, files: dict, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", path, "--length", str(length), "--threads", str(threads),
               "--input", str(files["input"]), "--bundle", str(files["bundle"]), "--layer", str(files["layer"]),
               "--checkpoint", str(files["checkpoint"]), "--units", str(files["units"](path))]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- coordinator

def predicted_peak_mb(measured: list[tuple[float, float]], seconds: float) -> float | None:
    """Quadratic (or, with two points, pure-square) extrapolation of peak RSS from shorter lengths."""
    if len(measured) >= 3:
        xs, ys = zip(*measured[-3:])
        return float(np.polyval(np.polyfit(xs, ys, 2), seconds))
    if len(measured) == 2:
        (x0, y0), (x1, y1) = measured
        b = (y1 - y0) / (x1 ** 2 - x0 ** 2)
        return y0 + b * (seconds ** 2 - x0 ** 2)
    return None


def prepare(workdir: Path, seconds: list[float], smoke: bool = False) -> dict:
    from audiotok.export.probe_audio import pseudo_speech

    workdir.mkdir(parents=True, exist_ok=True)
    if smoke:  # benchmarks/speed.py --smoke's files: one --workdir builds them once for both
        layer = SMOKE_LAYER
        checkpoint = build_checkpoint(workdir / "hubert-tiny-random", SMOKE_CONFIG)
        centroids = build_centroids(checkpoint, layer, workdir / f"centroids-L{layer}.npy", SMOKE_K,
                                    SMOKE_KMEANS_SECONDS)
        bundle = build_bundle(checkpoint, centroids, layer, "fp32", workdir / f"hubert-L{layer}-fp32.onnx")
    else:
        layer = LAYER
        checkpoint = build_checkpoint(workdir / "hubert-base-random")
        centroids = build_centroids(checkpoint, layer, workdir / f"km500-L{layer}.npy")
        bundle = build_bundle(checkpoint, centroids, layer, "fp32", workdir / f"km500-L{layer}-fp32.onnx")
    longest = int(max(seconds) * SAMPLE_RATE) + OFF_GRID
    audio = workdir / f"pass-memory-input-{longest}.npy"
    if not audio.exists():
        np.save(audio, np.concatenate([pseudo_speech(10.0, seed=INPUT_SEED + i)
                                       for i in range(-(-longest // (10 * SAMPLE_RATE)))])[:longest])
    return {"checkpoint": checkpoint, "bundle": bundle, "input": audio, "layer": layer,
            "units": lambda path: workdir / f"units-{path.replace(' ', '-')}.npy"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[30, 60, 120, 300])
    parser.add_argument("--workdir", default=None,
                        help="checkpoint, centroids, bundle (reused; default: /tmp/audiotok-bench, with --smoke a "
                             "new temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-gb", type=float, default=None,
                        help="skip lengths predicted to peak above this (default: 70%% of MemAvailable)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"benchmarks/speed.py's tiny model, one {SMOKE_SECONDS:g} s input: checks the script in "
                             "seconds (the suite); overrides --seconds")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--layer", type=int, default=LAYER, help=argparse.SUPPRESS)
    for hidden in ("--length", "--input", "--bundle", "--checkpoint", "--units"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.path, args.length = args.worker, int(args.length)
        return worker(args)
    if args.smoke:
        args.seconds = [SMOKE_SECONDS]
    if args.workdir is None:
        args.workdir = tempfile.mkdtemp(prefix="audiotok-pass-memory-") if args.smoke else "/tmp/audiotok-bench"
    seconds = sorted(args.seconds)
    files = prepare(Path(args.workdir) / ("smoke" if args.smoke else ""), seconds, smoke=args.smoke)
    rows, measured = [], {"one pass": [], "torch": []}
    for s in seconds:
        length = int(s * SAMPLE_RATE) + OFF_GRID
        limit_mb = 1024 * (args.max_gb if args.max_gb else 0.7 * available_gb())
        row = {"seconds": s}
        for path in ("one pass", "windowed", "torch"):
            if path == "windowed" and "error" in row["one pass"]:
                row[path] = {"error": "not run: nothing to compare with"}  # flat memory: 30 s's peak
                continue
            guess = predicted_peak_mb(measured.get(path, []), s)
            if guess is not None and guess > limit_mb:
                row[path] = {"error": f"not run: predicted peak {guess / 1024:.1f} GiB > {limit_mb / 1024:.1f} GiB"}
                continue
            row[path] = run_worker(path, length, files, args.threads)
            if "peak_mb" in row[path] and path in measured:
                measured[path].append((s, row[path]["peak_mb"]))
            print(f"{s:g} s {path}: {row[path]}", file=sys.stderr, flush=True)
        if "peak_mb" in row["one pass"] and "peak_mb" in row["windowed"]:
            one, windowed = np.load(files["units"]("one pass")), np.load(files["units"]("windowed"))
            row["agreement"] = float((one == windowed).mean())
        rows.append(row)
    print_table(rows)


def cell(run: dict) -> str:
    if "error" in run:
        return run["error"]
    return f"{run['peak_mb'] / 1024:.2f} GiB (+{(run['peak_mb'] - run['loaded_mb']) / 1024:.2f}), {run['seconds']:.1f} s"


def print_table(rows: list[dict]) -> None:
    print("| input | bundle, one pass: peak (+pass), time | bundle, 30 s windows | plain transformers, one pass "
          "| windowed = one pass |")
    print("|---|---|---|---|---|")
    for row in rows:
        agreement = f"{row['agreement']:.2%}" if "agreement" in row else "-"
        print(f"| {row['seconds']:g} s | {cell(row['one pass'])} | {cell(row['windowed'])} | {cell(row['torch'])} "
              f"| {agreement} |")
    print(f"\nload average after the run: {open('/proc/loadavg').read().split()[:3]}; "
          f"MemAvailable {available_gb():.1f} GiB")


if __name__ == "__main__":
    main()
